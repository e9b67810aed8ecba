-- intake.lua - the wrk script of the benchmark's intake phase: every request POSTs one note to
-- rebound-producer serve's /v1/notes, a different note id each (per connection and counter),
-- as a client of the HTTP API would. Usage: wrk -s intake.lua (set up by bench_intake.py; the
-- note body comes from the INTAKE_NOTE_FILE environment variable, with NOTE_ID to replace).

local template
local counter = 0
local thread_tag = 0

function setup(thread)
  thread_tag = thread_tag + 1
  thread:set("tag", thread_tag)
end

function init(_args)
  local file = assert(io.open(os.getenv("INTAKE_NOTE_FILE"), "r"))
  template = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = template:gsub("NOTE_ID", "intake-" .. tostring(tag) .. "-" .. tostring(counter), 1)
  return wrk.format(nil, "/v1/notes", nil, body)
end
