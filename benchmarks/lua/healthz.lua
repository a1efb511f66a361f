-- The framework ceiling: the cheapest route the server has.
wrk.method = "GET"
wrk.path = "/healthz"
