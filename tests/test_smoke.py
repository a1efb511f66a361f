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


def test_no_route_runs_code_in_a_worker_thread(app):
    """FastAPI runs a plain ``def`` endpoint or dependency in a thread pool; the hand-off costs more than a
    look-up's own work, so every one of them is a coroutine."""
    from fastapi.dependencies.models import _is_coroutine_callable
    from fastapi.routing import iter_route_contexts

    def plain(dependant) -> list[str]:
        found = [] if dependant.call is None or _is_coroutine_callable(dependant.call) else [dependant.call]
        return [*found, *(name for sub in dependant.dependencies for name in plain(sub))]

    routes = [(route.path, route.dependant) for route in iter_route_contexts(app.routes)
              if getattr(route, "dependant", None) is not None]
    assert len(routes) > 50
    offenders = {f"{path}: {getattr(call, '__qualname__', call)}" for path, dependant in routes
                 for call in plain(dependant)}
    assert not offenders, sorted(offenders)
