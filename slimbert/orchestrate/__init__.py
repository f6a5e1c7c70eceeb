"""Run jobs: a recipe stage by stage (``compress``), a benchmark (``benchmark``), autotune's search
(``autotune``). Only this layer publishes into the store and writes job records; the stages it runs
(``slimbert.compression``) transform models and return what they did."""
