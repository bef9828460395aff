-- wrk script: POST /v1/workspaces/{id}/restart, cycling over the ids in $IDS_FILE.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local headers = { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") }
local n = 0

function setup(thread)
    thread:set("offset", math.random(#ids))
end

function request()
    n = n + 1
    local id = ids[((n + (offset or 0)) % #ids) + 1]
    return wrk.format("POST", "/v1/workspaces/" .. id .. "/restart", headers, "")
end
