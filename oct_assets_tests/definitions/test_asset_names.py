"""The asset names of `contracts/assets.py` are exactly the definitions' asset keys."""

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
