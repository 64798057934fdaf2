"""Usage accounting: log.py records one row per request and keeps today's cloud spend for
the budget; report.py reads the log back for `appliance usage`. Prices and the one cost
formula are the cloud config's (`runtimes.upstream.config.Price`)."""
