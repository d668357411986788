-- wrk script for the logdist end-to-end bench (bench/e2e.py writes the body and sets the env).
--
-- WRK_BODY_FILE   a JSON packet of 250 messages; every "@@ID@@" in it is replaced per request by
--                 a fixed-width token unique to the request (nonce, thread, counter), so each
--                 packet_id (and, with WRK_ID_MODE=message, each message id) is unique.
-- WRK_NONCE       a run nonce (fixed width) so ids stay unique across runs against one process.
-- WRK_ID_MODE     "message" (default: packet and message ids unique per request), "packet"
--                 (only the packet id is unique), or "static" (one fixed body, cheapest).
-- WRK_RATE        if set: requests/s per thread, paced on a schedule (slot = max(next, now)),
--                 with wrk's delay() hook; used for the half-rate latency run.
-- WRK_COUNT_STATUS if set: count responses by status (slower; the RSS-bound check uses it).
-- done() prints one line "WRKJSON {...}" with the counts and the latency distribution.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk, bench_timespec_t *tp);
]]
local ts = ffi.new("bench_timespec_t")
local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local id_mode = os.getenv("WRK_ID_MODE") or "message"
local nonce = os.getenv("WRK_NONCE") or "00000000"
local parts = nil       -- body split at the placeholders
local static_req = nil
local counter = 0
local threads = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function load_body()
    local f = assert(io.open(assert(os.getenv("WRK_BODY_FILE"), "WRK_BODY_FILE not set"), "rb"))
    local text = f:read("*a")
    f:close()
    parts = {}
    local start = 1
    while true do
        local i, j = string.find(text, "@@ID@@", start, true)
        if not i then break end
        parts[#parts + 1] = string.sub(text, start, i - 1)
        parts[#parts + 1] = false -- the slot for the token
        start = j + 1
    end
    parts[#parts + 1] = string.sub(text, start)
    if id_mode == "packet" then
        -- keep only the first placeholder (the packet id); message ids get a fixed token
        local fixed = string.format("%s%02d%010d", nonce, 0, 0)
        local merged, seen = { parts[1], false }, false
        local buf = {}
        for k = 3, #parts do
            if parts[k] == false then buf[#buf + 1] = fixed else buf[#buf + 1] = parts[k] end
        end
        merged[3] = table.concat(buf)
        parts = merged
    elseif id_mode == "static" then
        local fixed = string.format("%s%02d%010d", nonce, 0, 0)
        local buf = {}
        for k = 1, #parts do
            if parts[k] == false then buf[#buf + 1] = fixed else buf[#buf + 1] = parts[k] end
        end
        static_req = table.concat(buf)
    end
end

function setup(thread)
    thread:set("tid", #threads + 1)
    threads[#threads + 1] = thread
end

function request()
    if parts == nil then load_body() end
    if static_req then return wrk.format(nil, nil, nil, static_req) end
    counter = counter + 1
    local token = string.format("%s%02d%010d", nonce, tid or 0, counter)
    local buf = {}
    for k = 1, #parts do
        local p = parts[k]
        if p == false then buf[k] = token else buf[k] = p end
    end
    return wrk.format(nil, nil, nil, table.concat(buf))
end

local rate = tonumber(os.getenv("WRK_RATE") or "")
if rate and rate > 0 then
    local interval = 1000.0 / rate
    local next_slot = nil
    function delay()
        local now = now_ms()
        if next_slot == nil or next_slot < now then next_slot = now end
        local wait = next_slot - now
        next_slot = next_slot + interval
        return math.floor(wait + 0.5)
    end
end

if os.getenv("WRK_COUNT_STATUS") then
    statuses = {}
    function response(status, headers, body)
        statuses[status] = (statuses[status] or 0) + 1
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    local counts = {}
    if os.getenv("WRK_COUNT_STATUS") then
        local total = {}
        for _, t in ipairs(threads) do
            local s = t:get("statuses") or {}
            for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
        end
        for k, v in pairs(total) do counts[#counts + 1] = string.format('"%d":%d', k, v) end
    end
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
        '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
        '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"statuses":{%s}}\n',
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
        e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean, table.concat(counts, ",")))
end
