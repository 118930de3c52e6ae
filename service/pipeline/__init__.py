"""A request's way from bytes to verdicts, in the order it travels: admission (is there room?), a
deadline for everything after the body is in, decoding on a bounded pool (imaging: hostile bytes ->
a checked float32 array), the model's dynamic batcher, and the verdicts (the reject decision on the
model's answer).

It knows no HTTP (its errors are service.errors types the HTTP layer renders) and no model
directory: a model reaches it as a batcher and its calibration.
"""
