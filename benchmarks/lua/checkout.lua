-- Checkout quote or commit for a random seeded member: a 3-line basket; the commit burns a few points and
-- earns on the rest. Every commit is unique (its own Idempotency-Key and receipt id).
-- args: members file (a line: member id, then the member's voucher code), key file, mode ("quote", "commit" or
-- "wallet"), store id. A quote names the member's voucher (10 % off the bakery line) and burns a few points.
-- "wallet" commits pay the whole basket from the member's wallet instead of burning points.
local members = {}
local vouchers = {}
local key, mode, store
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    local id, code = line:match("^(%S+)%s*(%S*)$")
    members[#members + 1] = id
    vouchers[#vouchers + 1] = code
  end
  key = io.open(args[2]):read("*l")
  mode, store = args[3], args[4]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  counter = math.random(1, 1000000000)
end

local lines = '[{"line_id":"1","sku":"COFFEE","category":"coffee","quantity":2,"unit_price":450},'
  .. '{"line_id":"2","sku":"CAKE","category":"bakery","quantity":1,"unit_price":380},'
  .. '{"line_id":"3","sku":"BEANS","category":"coffee","quantity":1,"unit_price":1299}]'

function request()
  counter = counter + 1
  local i = math.random(#members)
  local member = members[i]
  local redeem = '{"points":5}'
  if mode == "wallet" then redeem = '{"wallet_amount":2579}' end
  if mode == "quote" and vouchers[i] ~= "" then redeem = '{"points":5,"vouchers":["' .. vouchers[i] .. '"]}' end
  local body = '{"member":{"member_id":"' .. member .. '"},"store_id":"' .. store .. '","currency":"USD","lines":'
    .. lines .. ',"redeem":' .. redeem
  local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
  if mode ~= "quote" then
    local id = string.format("%d-%d", counter, math.random(1, 1000000000))
    body = body .. ',"receipt_id":"bench-' .. id .. '"}'
    headers["Idempotency-Key"] = "bench-" .. id
    return wrk.format("POST", "/v1/checkout/transactions", headers, body)
  end
  return wrk.format("POST", "/v1/checkout/quote", headers, body .. "}")
end

function response(status, headers, body)
  if status >= 300 then io.stderr:write(mode .. " answered " .. status .. ": " .. body .. "\n") end
end
