"""What the integration, browser and load-test tests share.

- `processes`: hubs, feeds and private Redis servers as real processes, a thin layer over
  `loadtest.services` (the one implementation of starting and stopping them), plus HTTP
  helpers and readiness checks;
- `fixtures`: the pytest fixtures built on it (a plugin, loaded by tests/conftest.py);
- `client`: the one WebSocket test client (both codecs) and the one seq check, which is
  `loadtest.streamcheck.StreamCheck`'s.
"""
