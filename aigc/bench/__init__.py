"""Load tests against an OpenFaaS-compatible gateway: cold start, scaling, and capacity tuning.

The locust suites live in `loadtests/`; this package starts them as separate
processes (gevent must patch ssl before anything imports it, and this process
has imported requests long before), gathers their CSVs and draws the reports.
"""
