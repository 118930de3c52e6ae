"""The service's Prometheus metrics (prometheus), the per-model OOD score histogram whose buckets come
with each model file (score_histogram), and the merging of every worker process's values (workers).

Every room reports into it; it imports no other part of the service.
"""
