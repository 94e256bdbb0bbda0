"""The embedded default: a local gateway that speaks the OpenFaaS gateway API.

It runs the functions of a stack.yml as real processes on one machine, with
scale from zero, scale to zero, autoscaling on in-flight requests and durable
async invocations. On a cluster, OpenFaaS or Knative do this job instead.
"""
