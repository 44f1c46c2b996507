"""resdet's configuration: its keys (detection, pretraining, pipeline), where config files
are, and the one loader with one-line errors for YAML and LazyConfig alike."""

from .files import (  # noqa: F401
    config_kind,
    configs_root,
    list_configs,
    resolve_config_file,
    shipped_config_file,
)
from .keys import (  # noqa: F401
    AUTO_DEVICE,
    add_pretrain_config,
    add_resdet_config,
    default_device,
    get_pipeline_cfg,
    get_pretrain_cfg,
    get_resdet_cfg,
)
from .load import (  # noqa: F401
    Config,
    apply_lazy_overrides,
    check_solver,
    check_weights_path,
    flat_items,
    is_lazy,
    kind_of,
    load_config,
    merge_config_dict,
    merge_config_file,
    merge_overrides,
    override_pairs,
    read_yaml,
)
