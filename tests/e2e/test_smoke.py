def test_chat_roundtrip_is_recorded(proxy, upstream):
    client = proxy.client()
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "echo from gpt-4o: hello there"
    rows = proxy.wait_rows(1)
    assert len(rows) == 1
    row = rows[0]
    assert row["status_code"] == 200
    assert row["prompt_tokens"] == 2
    assert row["cost_usd"] > 0
