"""Distribution: the `tf.distribute` strategy of a run, the cluster of a multi-worker run, and their checks.

`checks` and `cluster` import no TensorFlow, so the settings check reads them at once; `strategy` builds the
strategy the session trains under. Below the session: nothing here imports `session` or `cli`.
"""
