"""The session room: one run's model, data, optimizer, epoch counter and checkpoints (`session.Session`), and the
actions on it (`actions`, one module each). Importing the package imports nothing else, so the command line can
read the table of actions without loading TensorFlow."""
