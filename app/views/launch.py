"""Launch: build an experiment config in a form, validate it field by field, and queue it.

The method row (defense, iGAT, preset) sits above the form because changing it swaps the
defaults and the defense-parameter fields. The form is live widgets, not an ``st.form`` (which
holds edits in the browser until submitted): the YAML download, the cost estimate and the checks
always describe what the fields show. A long run is queued only after confirming its estimate.
All widget values live in session_state under ``launch.<key>`` and are (re)loaded from a base
config dict by ``load_into_form`` — from defaults, a cloned run (``?clone=<run_id>``) or YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from app import data as D
from app import launch_form as F
from app.common import PAGE_LIVE, PAGE_RUNS, get_engine, query_int, run_page, short_error
from app.configdiff import config_diff
from igat.config import ConfigError, ExperimentConfig

K = "launch."  # session_state prefix
DEFAULT_DEFENSE = "adp"
YAML_OPEN = "yaml_open"  # the YAML expander's state key
WHOLE = "%g"  # display of the float-typed whole-number widgets (F.WHOLE_KEYS): 2, not 2.00


def key(name: str) -> str:
    return K + name


def base_runs() -> dict[int, F.BaseRun]:
    """The runs iGAT can fine-tune, by id (read fresh: a run may have finished since the last rerun)."""
    return {r["id"]: F.BaseRun(**r) for r in D.base_runs(get_engine())}


def load_into_form(cfg: dict[str, Any]) -> None:
    """Make ``cfg`` the base config and write every widget value from it (only call this before
    the widgets are created in a run, i.e. at the top of the page or from a callback)."""
    st.session_state[key("base")] = cfg
    for name, value in F.form_values(cfg).items():
        st.session_state[key(name)] = value
    st.session_state[key(F.BASE_KEY)] = F.base_run_id(cfg, base_runs())
    st.session_state[key("errors")] = []


def current_values() -> dict[str, Any]:
    values = {name: st.session_state[key(name)] for name in F.FORM_PATHS if key(name) in st.session_state}
    if values.get("igat") and key(F.BASE_KEY) in st.session_state:  # the base only matters to iGAT
        values[F.BASE_KEY] = base_runs().get(st.session_state[key(F.BASE_KEY)])
    defense = values.get("defense")
    if defense in F.defense_names():
        for f in F.param_fields(F._registry_defense(defense).Params):
            k = key(F.DEFENSE_PARAM_PREFIX + f.name)
            if k in st.session_state:
                values[F.DEFENSE_PARAM_PREFIX + f.name] = st.session_state[k]
    names = [F.ADVANCED_PREFIX + path for _, path, _ in F.advanced_fields()]
    for attack in values.get("attacks") or []:
        names += [f"{F.ATTACK_PREFIX}{attack}.{f.name}" for f in F.attack_param_fields(attack)]
    values.update({name: st.session_state[key(name)] for name in names if key(name) in st.session_state})
    return values


def current_config() -> dict[str, Any]:
    return F.build_config(st.session_state[key("base")], current_values())


# --- callbacks (run before the script, so they may rewrite widget state) -------------------

def safe_callback(fn: Callable[[], None]) -> Callable[[], None]:
    """Callbacks run outside the page guard: turn an unexpected error into a form error."""

    def wrapper() -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - shown above the form instead of a traceback
            st.session_state[key("errors")] = [("form", f"unexpected error: {short_error(exc)}")]

    wrapper.__name__ = fn.__name__
    return wrapper


def on_method_change() -> None:
    """Defense / iGAT / preset changed: start from that method's recommended defaults, keeping
    the dataset, members, seeds, evaluation and naming the user already chose."""
    try:
        old = current_config()
        new = F.default_config(st.session_state[key("defense")], bool(st.session_state[key("igat")]),
                               st.session_state[key("preset")], dataset=F.get_path(old, "data.dataset") or "cifar10")
        protocol = F.protocol_name(old)
        for path in ("name", "tags", "data", "model.num_members", "model.depth", "model.width", "eval", "seed"):
            F.set_path(new, path, F.get_path(old, path))
        new = F.apply_protocol_dict(new, protocol)  # the CW attack follows the new preset
        if F.get_path(new, "igat.enabled"):  # a preset switch keeps the chosen base run
            F.set_path(new, F.INIT_CHECKPOINT, F.get_path(old, F.INIT_CHECKPOINT))
        seeds = st.session_state.get(key("seeds"), "0")
        load_into_form(new)
        st.session_state[key("seeds")] = seeds
    except Exception as exc:  # noqa: BLE001 - keep the form usable, report why defaults failed
        st.session_state[key("errors")] = [("defense.name", f"could not load defaults: {short_error(exc)}")]


def on_protocol_change() -> None:
    """paper / quick: write the protocol's attacks and number of examples into the form (custom: leave them)."""
    old = current_config()
    try:
        new = F.apply_protocol_dict(old, st.session_state[key(F.PROTOCOL_KEY)])
    except (ConfigError, ValueError) as exc:
        st.session_state[key("errors")] = [("eval", f"fix the fields below before choosing a protocol: "
                                                    f"{short_error(exc)}")]
        st.session_state[key(F.PROTOCOL_KEY)] = "custom"
        return
    seeds = st.session_state.get(key("seeds"), "0")
    base_run = st.session_state.get(key(F.BASE_KEY))
    load_into_form(new)
    st.session_state[key("seeds")] = seeds
    if base_run is not None:
        st.session_state[key(F.BASE_KEY)] = base_run


def protocol_row() -> None:
    """One click for the evaluation protocol, and the evaluation's estimated time before anything is queued."""
    st.radio("Evaluation protocol", F.PROTOCOLS, key=key(F.PROTOCOL_KEY), horizontal=True,
             on_change=safe_callback(on_protocol_change),
             help="paper: natural, PGD-20, SignHunter and AutoAttack on the full test set, CW on 1,000 (the paper's "
                  "Section 6.1); quick: the same attacks on 1,000 (natural, PGD) / 500 (CW, SH, AA) examples; "
                  "custom: the attacks and examples set below")
    chosen = st.session_state[key(F.PROTOCOL_KEY)]
    if chosen != "custom" and F.protocol_name(current_config()) != chosen:
        st.caption(f"The evaluation fields below differ from the {chosen} protocol: the run uses them as they are.")
    st.caption(F.estimate_text(current_config()))


def on_import() -> None:
    upload = st.session_state.get(key("yaml_file"))
    text = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else st.session_state.get(key("yaml_text"), "")
    st.session_state[key(YAML_OPEN)] = True  # keep the pasted text in view, whatever the outcome
    try:
        cfg = F.import_config(text)
    except ConfigError as exc:
        # Import problems are the YAML's, shown in its box: the form's own errors say what blocks queueing.
        st.session_state[key("import_errors")] = exc.errors
        return
    load_into_form(cfg)
    st.session_state[key("import_errors")] = []
    st.session_state[key("flash")] = ("success", f"Loaded config {cfg['name']!r} from YAML (fields it does not give: "
                                                 f"the recipe the form uses for {cfg['defense']['name']}).")


def fingerprint(configs: list[ExperimentConfig]) -> str:
    return "\n".join(c.to_json() for c in configs)


def on_confirm() -> None:
    """"Queue anyway" on a long run: confirm exactly the configs that were asked about, then queue."""
    st.session_state[key("confirmed")] = st.session_state.pop(key("confirm"), (None, ""))[0]
    on_submit()


def on_submit() -> None:
    values = current_values()
    configs, errors = F.validate(st.session_state[key("base")], values)
    st.session_state[key("errors")] = errors
    st.session_state[key("base")] = F.build_config(st.session_state[key("base")], values)
    st.session_state.pop(key("confirm"), None)
    if errors:
        return
    confirmed = st.session_state.pop(key("confirmed"), None)
    cost = F.long_run(configs[0])
    if cost is not None and confirmed != fingerprint(configs):
        # Nothing is queued yet: the page asks, showing the estimate (a change of the form asks again).
        runs = f" That is per run: {len(configs)} runs are queued, one per seed." if len(configs) > 1 else ""
        st.session_state[key("confirm")] = (fingerprint(configs), cost.text() + runs)
        return
    ablation = bool(st.session_state.get(key("ablation")))
    if ablation and not configs[0].igat.enabled:
        st.session_state[key("errors")] = [("igat.enabled", "the Table 3 ablation needs iGAT switched on")]
        return
    base_run = values.get(F.BASE_KEY) if configs[0].igat.enabled else None
    parent = base_run.id if base_run is not None else None  # the runs fine-tune it (worker: finetune task)
    try:
        import tasks.api as api  # lazily: Celery is only needed when something is queued

        if ablation:  # one ablation experiment per seed (the API groups the variants of one config)
            exp_ids, run_ids = [], []
            for cfg in configs:
                e, r = api.submit_ablation(cfg, parent_run_id=parent)
                exp_ids.append(e)
                run_ids.extend(r)
            exp_id = ", #".join(str(e) for e in exp_ids)
        elif len(configs) > 1:
            exp_id, run_ids = api.submit_seeds(configs[0], [c.seed for c in configs], parent_run_id=parent)
        elif parent is not None:
            exp_id, run_ids = api.submit_runs(configs, configs[0].name, kind="finetune", run_kind="finetune",
                                              parent_run_id=parent)
        else:
            exp_id, run_ids = api.submit_runs(configs, configs[0].name)
    except Exception as exc:  # noqa: BLE001 - broker down, DB error: say so next to the form
        st.session_state[key("errors")] = [("queue", f"could not queue the run: {short_error(exc)}")]
        return
    st.session_state[key("submitted")] = (exp_id, list(run_ids))


# --- rendering ------------------------------------------------------------------------------

def field_errors(name: str) -> None:
    """Errors for the widget ``name``, shown right under it."""
    for field, msg in st.session_state.get(key("errors"), []):
        if F.error_key(field) == name:
            st.error(f"`{field}`: {msg}", icon=":material/error:")


def defense_param_widgets(defense: str) -> None:
    fields = F.param_fields(F._registry_defense(defense).Params)
    if not fields:
        st.caption(f"`{defense}` has no parameters.")
        return
    cols = st.columns(3)
    for i, f in enumerate(fields):
        with cols[i % 3]:
            param_widget(f, F.DEFENSE_PARAM_PREFIX + f.name, F.param_label(defense, f.name))


def param_widget(f: F.ParamField, name: str, label: str) -> None:
    """One typed widget for a parameter or config field (form key ``name``), with its errors under it."""
    k = key(name)
    if k not in st.session_state:
        st.session_state[k] = F.param_to_widget(f, f.default)
    helptext = F.field_help(f)
    if f.kind == "bool":
        st.checkbox(label, key=k, help=helptext)
    elif f.kind == "int":
        st.number_input(label, key=k, step=1, help=helptext)
    elif f.kind == "float":
        st.number_input(label, key=k, step=0.001, format="%.6g", help=helptext)
    elif f.kind == "choice":
        st.selectbox(label, f.options, key=k, help=helptext)
    else:
        st.text_input(label, key=k, help=helptext)
    field_errors(name)


ATTACKS_TAB = "Evaluation attacks"


ADVANCED_OPEN = "advanced_open"  # the Advanced expander's state key
ADVANCED_TAB = "advanced_tab"  # its tabs' state key


def advanced_section() -> None:
    """Every config field the form does not show above, by section, and the parameters of the selected
    evaluation attacks: nothing of a config needs YAML to be edited.

    Built only while open, and then only the open tab: its ~70 widgets were half of the page's elements, and the
    browser drew them on every visit of Launch although the expander starts collapsed (``keep_lazy_state`` keeps
    their values while they are not drawn)."""
    fields = F.advanced_fields()
    titles = [*dict.fromkeys(title for title, _, _ in fields), ATTACKS_TAB]
    section = st.expander("Advanced: every other config field", key=key(ADVANCED_OPEN), on_change="rerun")
    if not section.open:
        return
    with section:
        for tab, title in zip(st.tabs(titles, key=key(ADVANCED_TAB), on_change="rerun"), titles, strict=True):
            if not tab.open:
                continue
            with tab:
                if title == ATTACKS_TAB:
                    attack_param_widgets()
                    continue
                cols = st.columns(3)
                for i, (_, path, f) in enumerate(x for x in fields if x[0] == title):
                    with cols[i % 3]:
                        param_widget(f, F.ADVANCED_PREFIX + path, path)


def keep_lazy_state() -> None:
    """Keep the values of the widgets that are drawn only on request (the Advanced section, the YAML box).

    Streamlit drops a widget's value at the end of a run that did not draw it; written back through Session State
    at the top of each run, the value stays (and the widget shows it when drawn again). Edits there thus survive
    closing the section or switching its tab, as the visible fields' edits do."""
    lazy = (key(F.ADVANCED_PREFIX), key(F.ATTACK_PREFIX), key("yaml_text"))
    for k in [k for k in st.session_state if isinstance(k, str) and k.startswith(lazy)]:
        st.session_state[k] = st.session_state[k]


def attack_param_widgets() -> None:
    attacks = st.session_state.get(key("attacks")) or []
    if not attacks:
        st.caption("No evaluation attack is selected.")
    for attack in attacks:
        fields = F.attack_param_fields(attack)
        st.markdown(f"**{attack}**" + ("" if fields else " has no parameters."))
        cols = st.columns(3)
        for i, f in enumerate(fields):
            with cols[i % 3]:
                param_widget(f, f"{F.ATTACK_PREFIX}{attack}.{f.name}", f"{attack}.{f.name}")


def method_row(defenses: list[str]) -> None:
    cols = st.columns([2, 1, 2])
    cols[0].selectbox("Defense", defenses, key=key("defense"), on_change=safe_callback(on_method_change),
                      help="every registered defense; switching loads its recommended settings")
    cols[1].toggle("iGAT", key=key("igat"), on_change=safe_callback(on_method_change),
                   help="fine-tune with iGAT on top of the defense (distributed adversarial examples + L_R)")
    cols[2].radio("Preset", F.PRESETS, key=key("preset"), on_change=safe_callback(on_method_change), horizontal=True,
                  help="paper = the paper's equations; reference-code = the released code's behaviours")
    defense_cls = F._registry_defense(st.session_state[key("defense")])
    if getattr(defense_cls, "description", ""):
        st.caption(defense_cls.description)
    field_errors("defense")


def yaml_box() -> None:
    # A keyed, state-tracking expander keeps its open state when messages above it come and go (an import
    # error, a flash): an unkeyed one is a new element then and collapses, hiding the pasted text. Its content
    # is built only while it is open (the export's YAML, the uploader: nothing to draw on a plain visit).
    box = st.expander("YAML import / export", key=key(YAML_OPEN), on_change="rerun")
    if not box.open:
        return
    with box:
        try:
            text = ExperimentConfig.from_dict(current_config()).to_yaml()
        except ConfigError:
            text = None
        if text is not None:
            # on_click="ignore": downloading needs no rerun (which would redraw the page around the box).
            st.download_button("Download this config (YAML)", text, file_name="experiment.yaml", mime="application/x-yaml",
                               key=key("download"), icon=":material/download:", on_click="ignore",
                               help="the form as it is now, edits included")
        else:
            st.caption("Fix the errors below to export the config.")
        problems = st.session_state.get(key("import_errors"), [])
        if problems:
            lines = "\n".join(f"- `{field}`: {msg}" for field, msg in problems)
            st.error(f"The YAML was not loaded; the form is unchanged:\n{lines}")
        st.file_uploader("Import a config file", type=["yaml", "yml", "json"], key=key("yaml_file"))
        st.text_area("…or paste YAML / JSON", key=key("yaml_text"), height=160,
                     placeholder="name: my-experiment\ndefense: {name: adp}\n...")
        st.button("Load into the form", key=key("import"), on_click=safe_callback(on_import), icon=":material/upload:")


def base_run_widget(bases: dict[int, F.BaseRun]) -> None:
    """The "Fine-tune from" picker: scratch or a succeeded run's checkpoint (train.init_checkpoint + parent run)."""
    k = key(F.BASE_KEY)
    if st.session_state.get(k) not in bases:  # unset, scratch, or a run that is gone
        st.session_state[k] = F.SCRATCH
    options = [F.SCRATCH, *bases]
    st.selectbox("Fine-tune from", options, key=k,
                 format_func=lambda i: bases[i].label() if i in bases else "train from scratch",
                 help="the paper trains the base defense first, then fine-tunes it with iGAT: pick a succeeded run "
                      "with the same defense, members and dataset (its checkpoint becomes train.init_checkpoint)")
    if st.session_state[k] in bases:
        finetune_changes(bases[st.session_state[k]])
    loaded = F.get_path(st.session_state[key("base")], F.INIT_CHECKPOINT)
    if loaded and st.session_state[k] == F.SCRATCH:
        st.caption(f"The loaded config's `train.init_checkpoint` (`{loaded}`) is not a succeeded run in the store; "
                   "pick a base run, or the run trains from scratch.")
    field_errors(F.BASE_KEY)


def finetune_changes(base: F.BaseRun) -> None:
    """What fine-tuning ``base`` with this form changes from the base run's config: the budget, then every field."""
    base_cfg = D.run_config(get_engine(), base.id)
    if base_cfg is None:
        return
    now = current_config()
    st.caption(F.scale_note(base_cfg, now))
    diff = config_diff({f"base run #{base.id}": base_cfg, "this fine-tuning": now},
                       ignore=("name", "output_dir", F.INIT_CHECKPOINT))
    with st.expander(f"What this fine-tuning changes from base run #{base.id} ({len(diff)} fields)", expanded=True):
        st.dataframe(diff, hide_index=True, width="stretch", key=key("finetune_diff"))


def the_form() -> None:
    igat_on = bool(st.session_state[key("igat")])
    bases = base_runs() if igat_on else {}
    combiners = F.combiner_names()
    attacks = F.attack_names()
    # Not an st.form: a form holds its edits in the browser until submitted, so the YAML download, the cost
    # estimate and the warnings above would describe the config before the edits.
    with st.container(border=True):
        st.markdown("**Experiment**")
        c = st.columns(3)
        with c[0]:
            st.text_input("Name", key=key("name"))
            field_errors("name")
        with c[1]:
            st.text_input("Tags", key=key("tags"), help="comma-separated, e.g. table1, cifar10")
        with c[2]:
            st.text_input("Seeds", key=key("seeds"), help="one run per seed, grouped in one experiment, e.g. 0, 1, 2")
            field_errors("seeds")

        st.markdown("**Data and ensemble**")
        c = st.columns(5)
        with c[0]:
            st.selectbox("Dataset", F.DATASETS, key=key("dataset"))
            field_errors("dataset")
        with c[1]:
            st.number_input("Members (N)", key=key("members"), step=1.0, format=WHOLE,
                            help=F.members_help(st.session_state[key("defense")]))
            field_errors("members")
        with c[2]:
            st.number_input("Member depth", key=key("depth"), step=6.0, format=WHOLE,
                            help="CIFAR ResNet depth 6n+2: 8, 14, 20 (the paper's ResNet-20), 32 ... 110")
            field_errors("depth")
        with c[3]:
            st.number_input("Member width", key=key("width"), step=1.0, format=WHOLE,
                            help="channel multiplier 1..8 (1 = 16/32/64 channels, the paper's)")
            field_errors("width")
        with c[4]:
            st.number_input("Evaluation examples", key=key("num_examples"), step=100.0, format=WHOLE,
                            help="equidistant test examples for the final evaluation (0 = all)")
            field_errors("num_examples")

        if igat_on:
            st.markdown("**iGAT**")
            c = st.columns(4)
            with c[0]:
                st.number_input(F.IGAT_LABELS["alpha"], key=key("alpha"), step=0.25, format="%.4g",
                                help="iGAT's weight of the CE on the adversarial examples it distributes to members "
                                     "(allowed 0..1000)")
                field_errors("alpha")
            with c[1]:
                st.number_input(F.IGAT_LABELS["beta"], key=key("beta"), step=0.25, format="%.4g",
                                help="iGAT's weight of the L_R regulariser (allowed 0..1000)")
                field_errors("beta")
            with c[2]:
                st.selectbox("Distributing rule", F.RULES, key=key("rule"),
                             help="soft = eq. 14 roulette, hard = eq. 13 argmax; random / opposite are Table 3 ablations")
                field_errors("rule")
            with c[3]:
                st.selectbox("iGAT combiner", F.IGAT_COMBINERS, key=key("igat_combiner"),
                             help="combiner of the global adversarial attack and the misclassification mask")
            base_run_widget(bases)

        st.markdown("**Training budget**")
        c = st.columns(4)
        with c[0]:
            st.number_input("Epochs", key=key("epochs"), step=1.0, format=WHOLE)
            field_errors("epochs")
        with c[1]:
            st.number_input("Batch size", key=key("batch_size"), step=1.0, format=WHOLE)
            field_errors("batch_size")
        with c[2]:
            st.number_input("Steps per epoch", key=key("steps_per_epoch"), step=1.0, format=WHOLE,
                            help="0 = a full pass over the data")
            field_errors("steps_per_epoch")
        with c[3]:
            st.number_input("Learning rate", key=key("lr"), step=0.001, format="%.6g")
            field_errors("lr")

        st.markdown("**Evaluation**")
        c = st.columns(2)
        with c[0]:
            st.multiselect("Combiners", combiners, key=key("combiners"))
            field_errors("combiners")
        with c[1]:
            st.multiselect("Attacks", attacks, key=key("attacks"),
                           help="their parameters: Advanced › Evaluation attacks below")
            field_errors("attacks")

        st.markdown(f"**Defense parameters** (`{st.session_state[key('defense')]}`)")
        defense_param_widgets(st.session_state[key("defense")])
        advanced_section()

        st.checkbox("Queue as the Table 3 ablation (soft / hard / random / opposite / beta = 0)", key=key("ablation"),
                    help="needs iGAT; one run per variant and seed, grouped in one ablation experiment; "
                         "every variant fine-tunes the run picked under 'Fine-tune from'")
        if igat_on and st.session_state.get(key(F.BASE_KEY), F.SCRATCH) == F.SCRATCH:
            st.info("No base run is picked under *Fine-tune from*: each ablation variant will be trained from scratch, "
                    "which is not the paper's Table 3 procedure (all variants fine-tune one base checkpoint).",
                    icon=":material/info:")
        st.caption(F.cost_text(current_config()))
        confirm_note()
        st.button("Queue", key=key("queue"), type="primary", on_click=safe_callback(on_submit), icon=":material/play_arrow:")


def confirm_note() -> None:
    """The question a long run gets before it is queued (asked by on_submit), while the form still holds that run."""
    pending = st.session_state.get(key("confirm"))
    if not pending:
        return
    configs, errors = F.validate(st.session_state[key("base")], current_values())
    if errors or fingerprint(configs) != pending[0]:  # edited since: the next Queue asks about the new config
        st.session_state.pop(key("confirm"), None)
        return
    st.warning(f"This is a long run. {pending[1]} Queue it anyway?", icon=":material/schedule:")
    c = st.columns([1, 1, 4])
    c[0].button("Queue anyway", key=key("confirm_yes"), type="primary", on_click=safe_callback(on_confirm))
    c[1].button("Not now", key=key("confirm_no"), on_click=lambda: st.session_state.pop(key("confirm"), None))


def errors_summary() -> None:
    errors = st.session_state.get(key("errors"), [])
    if errors:
        lines = "\n".join(f"- `{field}`: {msg}" for field, msg in errors)
        st.error(f"The config was not queued; fix these fields:\n{lines}")


def submitted_note() -> None:
    done = st.session_state.pop(key("submitted"), None)
    if done:
        exp_id, run_ids = done
        st.success(f"Queued experiment #{exp_id}: run(s) {', '.join(f'#{i}' for i in run_ids)}.")
        c = st.columns(2)
        c[0].page_link(PAGE_RUNS, label="See the queue", icon=":material/list:", query_params={"run": str(run_ids[0])})
        c[1].page_link(PAGE_LIVE, label="Follow it live", icon=":material/monitoring:", query_params={"run": str(run_ids[0])})


def body() -> None:
    st.title("Launch")
    defenses = F.defense_names()
    clone = query_int("clone")
    finetune = st.query_params.get("finetune") == "1"
    if clone is not None and st.session_state.get(key("cloned")) != (clone, finetune):
        cfg = D.run_config(get_engine(), clone)
        if cfg is None:
            st.warning(f"Run #{clone} does not exist; starting from the defaults.")
        elif finetune:
            run = D.get_run(get_engine(), clone) or {}
            load_into_form(F.finetune_config(cfg, run.get("checkpoint_path") or None))
            if st.session_state[key(F.BASE_KEY)] == clone:
                st.session_state[key("flash")] = ("info", f"iGAT fine-tuning of run #{clone} with the paper's iGAT "
                                                          "defaults for its defense, at the base run's budget; the "
                                                          "changes from the base are listed under Fine-tune from.")
            else:
                st.session_state[key("flash")] = ("warning", f"Run #{clone} is not a succeeded run with a checkpoint; "
                                                             "the form is pre-filled but iGAT would train from scratch.")
        else:
            load_into_form(cfg)
            st.session_state[key("flash")] = ("info", f"Pre-filled from run #{clone}; change what you need and queue.")
        st.session_state[key("cloned")] = (clone, finetune)
    keep_lazy_state()
    if key("base") not in st.session_state:
        load_into_form(F.default_config(DEFAULT_DEFENSE if DEFAULT_DEFENSE in defenses else defenses[0]))
    else:  # widget state is dropped when the user visits another page: restore it from the base
        for name, value in F.form_values(st.session_state[key("base")]).items():
            st.session_state.setdefault(key(name), value)
        if key(F.BASE_KEY) not in st.session_state:
            st.session_state[key(F.BASE_KEY)] = F.base_run_id(st.session_state[key("base")], base_runs())
    flash = st.session_state.pop(key("flash"), None)
    if flash:
        getattr(st, flash[0])(flash[1])
    submitted_note()
    method_row(defenses)
    protocol_row()
    yaml_box()
    errors_summary()
    the_form()


run_page(body)
