"""Adapters at the edge: the core's store and tick-transport interfaces over Redis and the
Channels layer. The only code that knows channels_redis internals (`transport`)."""
