"""marketstream: a market-data streaming hub on Django Channels."""
