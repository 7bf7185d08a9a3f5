"""The logged MLflow pyfunc, as code (MLflow's models-from-code).

`ray_app.tracking.store.log_pyfunc` passes this file as `python_model`: MLflow copies it
into the logged model and runs it at load time, so loading unpickles nothing (the weights
are read with `weights_only=True` from the bundle artifact). Not imported by the package:
running it is its whole purpose.
"""

from mlflow.models import set_model

from ray_app.tracking.pyfunc import AdultIncomeModel

set_model(AdultIncomeModel())
