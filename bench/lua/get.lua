-- bench/lua/get.lua -- wrk script: GET a ticket with a fresh random id on
-- every request, as the worker does (pass the Bearer token with -H).
-- Prints the same WRK_RESULT line as post.lua.

local nthreads = 0
function setup(thread)
	nthreads = nthreads + 1
	thread:set("thread_index", nthreads)
end

function init(args)
	math.randomseed(tonumber(args[1] or "1") * 1000 + (thread_index or 0) * 7919)
end

local function hex4()
	return string.format("%04x", math.random(0, 65535))
end

function request()
	local id = hex4() .. hex4() .. "-" .. hex4() .. "-4" .. string.sub(hex4(), 2) .. "-a"
		.. string.sub(hex4(), 2) .. "-" .. hex4() .. hex4() .. hex4()
	return wrk.format("GET", "/v0/tickets/" .. id)
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("WRK_RESULT %d %.3f %d %d %.3f %.3f %.3f %.3f %.3f\n",
		summary.requests, summary.duration / 1e6, e.status,
		e.connect + e.read + e.write + e.timeout,
		latency:percentile(50) / 1000, latency:percentile(90) / 1000,
		latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
