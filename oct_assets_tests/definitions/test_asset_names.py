"""The asset names of `contracts/assets.py` are exactly the definitions' asset keys."""

from dagster import AssetKey

from oct_assets.contracts import assets as names
from oct_assets.definitions import defs


def test_every_asset_name_is_an_asset_and_every_asset_has_a_name() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(names.ASSET_NAMES) == keys
    assert len(names.ASSET_NAMES) == len(set(names.ASSET_NAMES))


def test_each_constant_is_its_own_name_upper_cased() -> None:
    constants = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    assert all(value.upper() == key for key, value in constants.items())
    assert sorted(constants.values()) == sorted(names.ASSET_NAMES)


def test_the_assets_the_ml_core_computes_share_one_code_version() -> None:
    from oct_assets.ml.version import ML_CODE_VERSION

    graph = defs.resolve_asset_graph()
    ml_assets = (names.TRAINED_MODEL, names.CLUSTER_MODEL, names.PREDICTIONS)
    ml_assets += (names.CLUSTER_PREDICTIONS, names.ENSEMBLE_PREDICTIONS)
    versions = {name: graph.get(AssetKey(name)).code_version for name in ml_assets}
    assert versions == dict.fromkeys(versions, ML_CODE_VERSION)
