-- wrk script: POST a 4 KiB body (the /echo scenario of tests/bench/run.sh)
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
