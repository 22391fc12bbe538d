-- wrk script for bench/evalstore_logging.py --client-ids: like wrk_post.lua (same body,
-- same summary line), but every request carries its own ferry-request-id header
-- ("c<thread>-<counter>"), as a client that sends feedback later would.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "wrk_post.lua")

local counter = 0
local tag = "c"

function setup(thread)
  thread:set("tag", "c" .. tostring(math.random(1, 1000000000)))
end

function init(args)
  tag = wrk.thread:get("tag") or tag
end

function request()
  counter = counter + 1
  wrk.headers["ferry-request-id"] = tag .. "-" .. counter
  return wrk.format()
end
