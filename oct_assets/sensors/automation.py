"""`automation_sensor`: evaluates the assets' automation conditions (predictions after a new
model, see `oct_assets.assets.predictions.after_new_model`); on by default."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: predictions after a new model.",
)
