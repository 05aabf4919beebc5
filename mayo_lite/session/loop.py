"""The training and evaluation loops of a session.

A custom step under `strategy.run` rather than `Model.fit`: `fit` fails under MultiWorkerMirroredStrategy (measured
with TF 2.21: "Attempt to convert a value (PerReplica...) to a Tensor"), and one code path must serve every strategy.
Keras' `Progbar` draws the progress bar. Each step returns summed counts that are reduced across replicas, so the
figures are exact whatever the number of replicas. For a gated (FBS) model the steps also return the fraction of
channels the gates kept, which the progress bar, `eval` and `info` report.

Replicas compute the step one device computes on the same global batch (tests/test_replica_equivalence.py): the
loss is the sum over each replica's share divided by the global batch size, and the gated layers compute their
thresholds, densities and regularisers over the global batch. Batch normalisation differs: Keras'
`BatchNormalization` and the gates' `norm: batch` normalise each replica's share by its own statistics (the step
keeps one copy of the moving statistics, the replicas' mean). And a last batch too short to give every replica an
example is joined to the one before it.
"""

import logging
import math

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.errors import Interrupted, UserError
from mayo_lite.layers import gated_layers, mean_density, update_global_threshold
from mayo_lite.session.callbacks.progress import bar_verbosity
from mayo_lite.session.batches import batches_per_epoch, counts, data_errors, no_empty_replicas
from mayo_lite.session.epochs import epoch_text
from mayo_lite.session.stopping import Fetcher, loop_callbacks, stop_requests

log = logging.getLogger("mayo_lite")

class Loops:
    """Compiled train and eval steps for one session's model and optimizer."""

    def __init__(self, session):
        self.session = session
        self.strategy = session.strategy
        self.model = session.model
        self.num_classes = int(self.model.output.shape[-1])
        self.gated = list(gated_layers(self.model))
        self._train_step = None
        self._eval_step = None

    def _build_train_step(self):
        model, optimizer, strategy = self.model, self.session.optimizer, self.strategy
        examples = float(self.session.examples("train"))
        replicas = strategy.num_replicas_in_sync
        epoch = self.session.epoch.variable
        num_classes, gated, teacher = self.num_classes, self.gated, self.session.teacher
        # The batch norms' moving statistics (Keras' and the gates'): Keras creates them without a replica
        # aggregation, so each replica would update its own copy from its own share of the batch and the copies would
        # drift apart (the checkpoint keeping the first replica's). The step sets them to the mean over all replicas
        # (other workers' too), so that every worker keeps the same copy.
        statistics = [variable for variable in model.non_trainable_variables
                      if replicas > 1 and variable.name in ("moving_mean", "moving_variance")]

        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)  # the loss in float32 under mixed precision
                update_global_threshold(gated)
                losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                losses = teacher.blend(images, logits, losses) if teacher is not None else losses  # train.distill
                # The mean over the global batch: a partial last batch is split unevenly between the replicas, and
                # a mean of the replicas' means would weigh their examples unequally.
                size = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(labels)[0], tf.float32))
                loss = tf.reduce_sum(losses) / size
                # Replicas trace through the same layers, and a layer keeps its `add_loss` tensors in one list, so
                # `model.losses` holds every replica's; each counts those on its own device. Each is the same on every
                # replica (weight penalties; gate regularisers of the global batch): each replica adds its share.
                own = [tf.cast(value, tf.float32) for value in model.losses
                       if replicas == 1 or value.device == logits.device]
                regularization = tf.add_n(own) if own else tf.constant(0.0)
                total = loss + regularization / replicas
                # float16 gradients underflow without loss scaling (LossScaleOptimizer unscales them again).
                scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            top1, top5 = counts(labels, logits, num_classes)
            count = tf.cast(tf.shape(labels)[0], tf.float64)
            density = tf.cast(mean_density(gated), tf.float64) * count
            means = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(variable.value) for variable in statistics]
            ) if statistics else []
            return (tf.reduce_sum(tf.cast(losses, tf.float64)), top1, top5, count, density,
                    tf.cast(total, tf.float64)), means

        @tf.function
        def step(batch):
            results, means = strategy.run(replica_step, args=batch)
            loss, top1, top5, count, density, total = [
                strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]
            for variable, mean in zip(statistics, means):
                variable.assign(strategy.experimental_local_results(mean)[0])  # the same on every replica
            epoch.assign_add(count / examples)
            return loss, top1, top5, count, density, total
        return step

    def _build_eval_step(self):
        model, strategy, num_classes, gated = self.model, self.strategy, self.num_classes, self.gated

        def replica_step(images, labels):
            logits = tf.cast(model(images, training=False), tf.float32)
            losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            top1, top5 = counts(labels, logits, num_classes)
            count = tf.cast(tf.shape(labels)[0], tf.float64)
            # Each gated layer's density on this batch, weighted by the batch size, for per-layer means.
            densities = tf.stack([tf.cast(layer.last_density, tf.float64) for layer in gated] or
                                 [tf.constant(1.0, tf.float64)]) * count
            return tf.reduce_sum(tf.cast(losses, tf.float64)), top1, top5, count, densities

        @tf.function
        def step(batch):
            results = strategy.run(replica_step, args=batch)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]
        return step

    def train(self, max_epochs, callbacks=()):
        """Trains until the epoch counter reaches `max_epochs`, driving `callbacks` (Keras callbacks) as `fit`
        would: `on_train_batch_end(step of the epoch, logs)` after every step, `on_epoch_end(epoch index, logs)` at
        each boundary. A callback that sets `model.stop_training` ends training after the step or epoch.

        Ctrl-C or SIGTERM stops training after the current step: the `LoopCallback`s among `callbacks` (the
        checkpoints) are called, then `Interrupted` is raised.
        """
        callbacks = keras.callbacks.CallbackList(list(callbacks), model=self.model)
        self.model.stop_training = False
        logs = {}
        with stop_requests() as requested:
            callbacks.on_train_begin()
            try:
                logs = self._train(max_epochs, callbacks, requested)
            except Exception as error:
                for callback in loop_callbacks(callbacks):
                    callback.on_train_failure(error)
                raise
            finally:
                callbacks.on_train_end(logs)
            if requested:
                raise Interrupted(f"interrupted ({requested[0]}) at epoch {self.session.epoch.value:.3f}; the "
                                  "checkpoint `latest` holds the progress and `train` continues from it")

    def _logs(self, totals, densities, batch_total=None):
        """The loop's figures: means over the epoch so far."""
        count = totals[3]
        logs = {"loss": totals[0] / count, "top1": totals[1] / count, "top5": totals[2] / count,  # loss: blended
                "regularization_loss": totals[5] / count - totals[0] / count,  # with train.distill's soft term
                "learning_rate": float(self.session.learning_rate())}
        if self.gated:
            logs["density"] = totals[4] / count
            logs.update({f"density/{layer.name}": value / count for layer, value in zip(self.gated, densities)})
        if batch_total is not None:
            logs["total_loss"] = batch_total
        return logs

    def _stop(self, callbacks, logs):
        for callback in loop_callbacks(callbacks):
            callback.on_stop_request(logs)

    def _train(self, max_epochs, callbacks, requested):
        session = self.session
        if self._train_step is None:
            self._train_step = self._build_train_step()
        examples = session.examples("train")
        replicas = self.strategy.num_replicas_in_sync
        read, steps = batches_per_epoch(examples, session.batch_size, replicas)
        callbacks.set_params({"epochs": max_epochs, "steps": steps, "verbose": 1})
        logs = {}
        while session.epoch.value < max_epochs - 1e-9:
            index = int(math.floor(session.epoch.value + 1e-9))
            done = int(round((session.epoch.value - index) * examples / session.batch_size))
            # An epoch is `read` batches even when the split holds more (`num_examples_per_epoch` below its size).
            dataset = no_empty_replicas(session.pipeline("train", index).skip(done).take(read - done), replicas)
            callbacks.on_epoch_begin(index)
            totals = np.zeros(6)
            densities = np.zeros(len(self.gated))
            batches = Fetcher(self.strategy.experimental_distribute_dataset(dataset), requested)
            with data_errors(session, "train"):  # the pipeline's errors surface in the loop
                for number, batch in enumerate(batches, start=done + 1):
                    callbacks.on_train_batch_begin(number)
                    loss, top1, top5, count, density, total = (float(v) for v in self._train_step(batch))
                    totals += (loss, top1, top5, count, density, total * count)
                    densities += [float(keras.ops.convert_to_numpy(layer.last_density)) * count
                                  for layer in self.gated]
                    logs = self._logs(totals, densities, total) | {
                        "step": index * steps + number, "epoch": session.epoch.value}
                    callbacks.on_train_batch_end(number, logs)
                    if requested:
                        # Saved here, while the input pipeline is still running: tearing its iterator down first
                        # waits for the batches its threads are preparing, tens of seconds on a loaded machine.
                        self._stop(callbacks, logs)
                        return logs
                    if session.epoch.value >= max_epochs - 1e-9 or self.model.stop_training:
                        break
            if requested:  # asked to stop while waiting for a batch
                self._stop(callbacks, logs)
                return logs
            # The reading thread has reached the end of the epoch's batches: let it finish. Left running inside
            # TensorFlow when the process exits, it aborts the process ("terminate called after throwing an instance
            # of ''"; measured in 7 of 10 two-worker runs).
            batches.close()
            if session.epoch.value >= index + 1 - 1e-6:
                # Snap to the boundary: summed float increments land a hair off whole epochs.
                session.epoch.assign(index + 1)
            if totals[3]:
                logs = self._logs(totals, densities) | {"epoch": session.epoch.value}
            callbacks.on_epoch_end(index, logs)
            if self.model.stop_training:
                log.info("training stopped by a callback at epoch %s", epoch_text(session.epoch.value))
                break
        return logs

    def evaluate(self, progress=True, max_batches=None, split="validate"):
        """Top-1, top-5 and mean loss over `split` (validate or test), or its first `max_batches` batches.

        For a gated model also `density`, the fraction of all gated channels kept, and `layer_densities`, each
        gated layer's mean fraction of active channels, by Keras layer name.
        """
        session = self.session
        if self._eval_step is None:
            self._eval_step = self._build_eval_step()
        dataset = session.pipeline(split)
        replicas = self.strategy.num_replicas_in_sync
        _, steps = batches_per_epoch(session.examples(split), session.batch_size, replicas)
        if max_batches is not None:
            dataset = dataset.take(max_batches)
            steps = min(steps, max_batches)
        dataset = no_empty_replicas(dataset, replicas)
        bar = keras.utils.Progbar(steps, verbose=bar_verbosity() if progress else 0)
        totals = np.zeros(4)
        densities = 0.0
        for number, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset), start=1):
            with data_errors(session, split):
                *figures, batch_densities = self._eval_step(batch)
            totals += [float(v) for v in figures]
            densities = densities + np.asarray(batch_densities, dtype=np.float64)
            bar.update(number)
        if totals[3] == 0:
            raise UserError(f"dataset {session.dataset.get('name')}: the {split} split is empty")
        result = {"top1": float(totals[1] / totals[3]), "top5": float(totals[2] / totals[3]),
                  "loss": float(totals[0] / totals[3]), "examples": int(totals[3])}
        if self.gated:
            layer_densities = {layer.name: float(value) for layer, value in zip(self.gated, densities / totals[3])}
            channels = sum(layer.filters for layer in self.gated)
            result["density"] = sum(layer_densities[layer.name] * layer.filters for layer in self.gated) / channels
            result["layer_densities"] = layer_densities
        return result
