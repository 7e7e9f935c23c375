-- The bars' timer (after bars.lua): make final every open bar of the given symbols whose
-- interval ended, keep it and publish it. Idempotent: a bar already final is left alone, so
-- several publishers of a symbol may all call it and each bar is published final once.
--
-- KEYS[1] bar state hash
-- ARGV[1] final bars kept per symbol and interval   ARGV[2] prefix of the bar list keys
-- ARGV[3] now, seconds since the epoch (a decimal)
-- then per symbol, from ARGV[4]: symbol, channel of its bars ("" = do not publish)
-- Returns the number of bars made final.

local keep, list_prefix, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  local symbol = ARGV[i]
  bar_channel[symbol] = ARGV[i + 1]
  bar_finalize(KEYS[1], symbol, now, keep, list_prefix)
end
return bar_flush(KEYS[1])
