-- wrk: POST /api/v1/notes with a small JSON body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"benchmark note","body":"written by scripts/bench to measure the write path"}'
