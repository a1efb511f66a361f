async def test_health(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text


async def test_enroll_and_get(client):
    r = await client.post("/v1/members", json={"name": "Ann", "phone": "+14155552671"})
    assert r.status_code == 201, r.text
    m = r.json()
    r = await client.get(f"/v1/members/{m['id']}")
    assert r.status_code == 200 and r.json()["name"] == "Ann"
