# The two commands: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# the whole tree, then --strict on the framework-free core, the client library and the tests' support code
MYPY := $(VENV)/bin/mypy . && $(VENV)/bin/mypy --strict marketstream/core marketstream/client tests/support
REDIS_CHECK := $(PY) -c "import redis,sys; redis.Redis(host='127.0.0.1', port=6379, socket_connect_timeout=2).ping()"

.PHONY: run test test-cluster lint fmt install install-dev install-load clean vendor vendor-check screenshot

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "marketstream needs Python 3.11 or newer: run 'make PYTHON=python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The browser tests use Debian's Chromium (never a downloaded one).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { \
	  echo "The browser tests need Chromium: run 'apt-get install -y chromium' as root"; exit 1; }
	apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }

# The cluster tests (tests/cluster/) put HAProxy from Debian's packages in front of the hubs. Their
# Sentinels are `redis-server --sentinel`: the redis-server package is enough (no redis-sentinel).
HAPROXY := /usr/sbin/haproxy
$(HAPROXY):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { \
	  echo "The cluster tests need HAProxy: run 'apt-get install -y haproxy' as root"; exit 1; }
	apt-get install -y -q haproxy || { apt-get update -q && apt-get install -y -q haproxy; }

# The alert rules (docker/prometheus/alerts.yml) and Prometheus' configuration are checked and unit-tested
# by tests/test_compose.py with promtool, from Debian's prometheus package. Installing it may start a
# Prometheus server: it is stopped and disabled at once (the tests need only promtool).
PROMTOOL := /usr/bin/promtool
$(PROMTOOL):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { \
	  echo "The alert rule tests need promtool: run 'apt-get install -y prometheus' as root"; exit 1; }
	apt-get install -y -q --no-install-recommends prometheus || { \
	  apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }
	-systemctl disable --now prometheus 2>/dev/null || service prometheus stop 2>/dev/null

# loadtest.scriptcost counts Redis's instructions in publish.lua with valgrind (tests/loadtest/test_scriptcost.py).
VALGRIND := /usr/bin/valgrind
$(VALGRIND):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { \
	  echo "The script cost test needs valgrind: run 'apt-get install -y valgrind' as root"; exit 1; }
	apt-get install -y -q valgrind || { apt-get update -q && apt-get install -y -q valgrind; }

$(VENV)/.installed-load: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[load]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
## The load-test tools (locust, websocket-client, websockets, psutil) into .venv
install-load: $(VENV)/.installed-load

## Serve the hub with a simulated feed on the embedded default: http://127.0.0.1:$(PORT) (admin at /admin/;
## anonymous access on, for trying it out)
run: install
	$(PY) manage.py migrate --noinput
	MARKETSTREAM_ADMIN=true MARKETSTREAM_ANONYMOUS=true $(PY) -m marketstream.serve --host 127.0.0.1 --port $(PORT)

## Lint, type-check and run the whole suite against the Redis on 127.0.0.1:6379 (and Chromium, promtool and
## valgrind; the cluster suite, tests/cluster/, needs root and HAProxy)
test: install-dev $(CHROMIUM) $(HAPROXY) $(PROMTOOL) $(VALGRIND)
	@$(REDIS_CHECK) 2>/dev/null || { echo "Redis is not answering on 127.0.0.1:6379. Start it with:"; \
	  echo '  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'; exit 1; }
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)
	$(PY) -m pytest

## The cluster suite alone (as root): two hub hosts, two Redis shard hosts (one Sentinel-managed), a feed
## host and HAProxy, each in its own network namespace; faults: a hub host lost, a shard cut, a failover
test-cluster: install-dev $(HAPROXY)
	$(PY) -m pytest tests/cluster

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)

fmt: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## The page's libraries (lightweight-charts, @msgpack/msgpack) are vendored in marketstream/static/vendor/:
## refresh them from the npm registry at the versions of marketstream/frontend/package-lock.json and check
## their SHA-256 (UPDATE=1 rewrites the list). Needs Node.js and npm; `make run` does not.
vendor:
	UPDATE=$(UPDATE) marketstream/frontend/vendor.sh

vendor-check:
	marketstream/frontend/vendor.sh --check

## docs/dashboard.png, the README's screenshot, taken by the browser tests' Chromium (Redis on 127.0.0.1:6379)
screenshot: install-dev $(CHROMIUM)
	MARKETSTREAM_SCREENSHOT=docs/dashboard.png $(PY) -m pytest -q tests/browser/test_dashboard.py -k readme_screenshot

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
