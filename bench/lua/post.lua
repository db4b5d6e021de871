-- bench/lua/post.lua -- wrk script: POST webhook notifications of the
-- benchmark mix (the same as bench.payload in bench/sql/common.sql):
--   topic   30 % sac_ticket, 70 % sac_message
--   status  50 % CREATION, 40 % UPDATE, 10 % DELETION
--   ids     fresh random v4 UUIDs on every request, so nothing coalesces
--
-- Usage: [WRK_DELAY_MS=D] wrk ... -s post.lua URL -- SEED
--   SEED          a number; each wrk thread seeds its generator with SEED and
--                 its index, so threads and runs send different ids
--   WRK_DELAY_MS  optional pause before each request on a connection (a
--                 float: rounded up or down at random so that the mean is D);
--                 with C connections the rate is about C * 1000 / (D + latency)
--                 requests/s, since the pause starts after the previous answer.
--                 An environment variable, not an argument: wrk decides whether
--                 to pace when it loads the script, before init() sees arguments
-- At the end it prints one line for the benchmark scripts:
--   WRK_RESULT requests duration_s non2xx errors p50_ms p90_ms p99_ms max_ms mean_ms

local tenant = "3b5cf468-c858-404b-9e53-630e3df9d74a"
local statuses = { "CREATION", "UPDATE", "DELETION" }

local nthreads = 0
function setup(thread)
	nthreads = nthreads + 1
	thread:set("thread_index", nthreads)
end

function init(args)
	local seed = tonumber(args[1] or "1") or 1
	math.randomseed(seed * 1000 + (thread_index or 0) * 7919)
	wrk.headers["Content-Type"] = "application/json"
end

local function hex4()
	return string.format("%04x", math.random(0, 65535))
end

-- a random version-4 UUID
local function uuid()
	return hex4() .. hex4() .. "-" .. hex4() .. "-4" .. string.sub(hex4(), 2) .. "-"
		.. string.format("%x", 8 + math.random(0, 3)) .. string.sub(hex4(), 2) .. "-"
		.. hex4() .. hex4() .. hex4()
end

function request()
	local k = math.random(0, 99)
	local kind = k % 10
	local s = math.floor(k / 10)
	local status = s < 5 and statuses[1] or (s < 9 and statuses[2] or statuses[3])
	local body
	if kind < 3 then
		local t = uuid()
		body = '{"data": {"status": "' .. status .. '", "params": {"id": "' .. t
			.. '"}, "resource": "/v0/tickets/' .. t .. '"}, "tenant_id": "' .. tenant
			.. '", "topic": "sac_ticket"}'
	else
		local t, m = uuid(), uuid()
		body = '{"data": {"status": "' .. status .. '", "params": {"ticket_id": "' .. t
			.. '", "id": "' .. m .. '"}, "resource": "/v0/tickets/' .. t .. '/messages/' .. m
			.. '"}, "tenant_id": "' .. tenant .. '", "topic": "sac_message"}'
	end
	return wrk.format("POST", nil, nil, body)
end

-- delay() exists only when pacing is asked for: without it wrk sends each
-- request as soon as the previous answer is in
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "") or 0
if delay_ms > 0 then
	function delay()
		local base = math.floor(delay_ms)
		if math.random() < delay_ms - base then
			return base + 1
		end
		return base
	end
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("WRK_RESULT %d %.3f %d %d %.3f %.3f %.3f %.3f %.3f\n",
		summary.requests, summary.duration / 1e6, e.status,
		e.connect + e.read + e.write + e.timeout,
		latency:percentile(50) / 1000, latency:percentile(90) / 1000,
		latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
