"""The asset graph: raw tables (with their quarantines) -> features -> failure_model -> daily_predictions
-> maintenance_worklist (with its CSV files) -> maintenance_worklist_page (the crews' HTML pages); a week later,
prediction_outcomes. Asset code orchestrates and describes; lib/ does the work."""

from batch_scoring.defs.assets.features import features
from batch_scoring.defs.assets.model import failure_model
from batch_scoring.defs.assets.outcomes import prediction_outcomes
from batch_scoring.defs.assets.raw import RAW_ASSETS
from batch_scoring.defs.assets.scoring import daily_predictions, maintenance_worklist, maintenance_worklist_page

# every asset, as its code runs in a Spark session: in this process (local Spark or a cluster's driver)
# or, in Databricks mode, on the cluster a Databricks job run starts
SPARK_ASSETS = [
    *RAW_ASSETS,
    features,
    failure_model,
    daily_predictions,
    maintenance_worklist,
    maintenance_worklist_page,
    prediction_outcomes,
]
