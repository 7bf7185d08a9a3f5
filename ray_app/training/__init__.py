"""The one training loop and its runners: Ray Train, Tune, Katib, the training job."""
