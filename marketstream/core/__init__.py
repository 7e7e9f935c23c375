"""The framework-free core of the hub: ticks, codecs, requests, connections and the hub.

Nothing here imports Django, Channels, channels_redis, redis, uvicorn or the apps around
it (consumers, feeds, loadtest); the edges hand the core a store and a tick transport
through the interfaces in `store` and `transport` (docs/design.md, "Architecture").
"""
