-- Member look-up by card number, a random member of the seeded base each time.
-- Reads the card numbers and the key from files that bench.py writes.
local cards = {}
local key

function init(args)
  for line in io.lines(args[1]) do cards[#cards + 1] = line end
  key = io.open(args[2]):read("*l")
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local card = cards[math.random(#cards)]
  return wrk.format("GET", "/v1/members?card_number=" .. card, {["Authorization"] = "Bearer " .. key})
end

function response(status, headers, body)
  if status ~= 200 then io.stderr:write("lookup answered " .. status .. "\n") end
end
