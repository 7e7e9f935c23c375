-- The seq authority: assign each tick of a batch its symbol's next seq (and epoch), save it
-- as the snapshot, append it to the symbol's history and publish it, as one atomic step on
-- the symbol's Redis. Publishers of one symbol anywhere share one seq, in publish order.
-- Each tick also counts in its symbol's bars (bars.lua, prepended to this script); the bars
-- the batch changed are kept and published once per symbol, after its ticks.
--
-- KEYS[1] seq hash (symbol -> last seq)       KEYS[2] epoch hash (symbol -> epoch)
-- KEYS[3] snapshot hash (symbol -> tick)      KEYS[4] catalog set
-- KEYS[5] bar state hash (bars.lua)           KEYS[5 + i] the history stream of tick i
-- ARGV[1] history length kept per symbol (approximate, at least this many)
-- ARGV[2] a fresh epoch, given to symbols whose seq is lost (or new)
-- ARGV[3] final bars kept per symbol and interval   ARGV[4] prefix of the bar list keys
-- then per tick, from ARGV[5]: symbol, msgpack head, JSON head, layer channel ("" = do not
--   publish), ts in whole seconds ("" = no bars), price, size, channel of its bars
--   A head is the tick's encoding up to the value of its last field, `seq`, which this
--   script appends: msgpack `head .. int(seq)`, JSON `head .. seq .. "}"`.
-- Returns {seq, epoch, ...} per tick, in order.

local maxlen = tonumber(ARGV[1])
local fresh = ARGV[2]
local keep, list_prefix = tonumber(ARGV[3]), ARGV[4]
local FIELDS, FIRST = 8, 4
local seqs, epochs, snaps = {}, {}, {}
local out = {}

-- msgpack's header of a bin of n bytes (str_head, of a str, is bars.lua's)
local function bin_head(n)
  if n < 256 then return string.char(0xc4, n) end
  return string.char(0xc5, math.floor(n / 256), n % 256)
end
local function str(s) return str_head(#s) .. s end
-- The layer message's fixed parts, made once per call. Per tick the message is one
-- concatenation: each intermediate string costs Redis a new interned Lua string (hashed,
-- compared on collision) and garbage to collect (loadtest.scriptcost, docs/performance.md).
local TICK_HEAD = '\134' .. str('type') .. str('tick') .. str('s')
local KEY_Q, KEY_M, KEY_J, KEY_E = str('q'), str('m'), str('j'), str('e')

local n = (#ARGV - FIRST) / FIELDS
for i = 1, n do
  local base = FIRST + (i - 1) * FIELDS
  local symbol, mhead, jhead, channel = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local history = KEYS[5 + i]
  local seq = seqs[symbol]
  if seq == nil then
    seq = tonumber(redis.call('HGET', KEYS[1], symbol))
    local epoch = redis.call('HGET', KEYS[2], symbol)
    if seq == nil then
      -- no stored seq: a new symbol, or its state was lost. A snapshot written by a
      -- version before the seq hash still says where seq was.
      local snap = redis.call('HGET', KEYS[3], symbol)
      if snap then
        local ok, tick = pcall(cmsgpack.unpack, snap)
        if ok and type(tick) == 'table' and tonumber(tick['seq']) then seq = tonumber(tick['seq']) end
      end
      if seq == nil then
        seq = 0
        epoch = false
        redis.call('DEL', history)
      end
    end
    if not epoch then
      epoch = fresh
      redis.call('HSET', KEYS[2], symbol, epoch)
    end
    epochs[symbol] = epoch
  end
  seq = seq + 1
  seqs[symbol] = seq
  local epoch = epochs[symbol]
  local packed_seq, seq_text = cmsgpack.pack(seq), string.format('%d', seq)
  local tick = mhead .. packed_seq
  local json = jhead .. seq_text .. '}'
  snaps[symbol] = tick
  if maxlen > 0 then
    -- ARGV[1] as given: a number argument would be formatted again on every call
    redis.call('XADD', history, 'MAXLEN', '~', ARGV[1], seq_text .. '-0', 'm', tick, 'j', json)
  end
  if channel ~= '' then
    local message = TICK_HEAD .. str_head(#symbol) .. symbol .. KEY_Q .. packed_seq
      .. KEY_M .. bin_head(#tick) .. tick .. KEY_J .. bin_head(#json) .. json .. KEY_E .. str_head(#epoch) .. epoch
    redis.call('PUBLISH', channel, message)
  end
  out[#out + 1] = seq
  out[#out + 1] = epoch
  local second = ARGV[base + 5]
  if second ~= '' then
    bar_channel[symbol] = ARGV[base + 8]
    bar_tick(KEYS[5], symbol, tonumber(second), tonumber(ARGV[base + 6]), tonumber(ARGV[base + 7]), keep, list_prefix)
  end
end
-- one write per key for the whole call: a redis.call costs more than the command it runs
local seq_fields, snap_fields, members = {}, {}, {}
for symbol, seq in pairs(seqs) do
  seq_fields[#seq_fields + 1] = symbol
  seq_fields[#seq_fields + 1] = string.format('%d', seq)
  snap_fields[#snap_fields + 1] = symbol
  snap_fields[#snap_fields + 1] = snaps[symbol]
  members[#members + 1] = symbol
end
call_each('HSET', KEYS[1], seq_fields)
call_each('HSET', KEYS[3], snap_fields)
call_each('SADD', KEYS[4], members)
bar_flush(KEYS[5])
return out
