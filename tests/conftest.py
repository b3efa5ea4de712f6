"""Shared fixtures and test tiers. Helpers live in tests/helpers.py (tiny files made in tmp_path,
never downloaded); test files import from there, never from each other.

Tiers: ``pytest -m "not slow"`` runs the core invariants in under a minute for the inner loop; the
README's ``python -m pytest -q`` runs everything. A test is slow when it starts real processes
(signals, kill-and-resume, torchrun, the sandboxed demo), trains, or searches many cases: whole
modules are listed in ``SLOW_MODULES``, single tests in ``SLOW_TESTS`` or carry ``@pytest.mark.slow``.
Both tiers run on one xdist worker per CPU (``-n auto`` in pyproject's addopts), torch on one
thread in each.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SLOW_MODULES = {
    "test_bad_inputs.py",  # ~100 rows through the real command
    "test_kill_resume.py",  # real processes, SIGKILL/SIGINT/SIGTERM
    "test_demo_pipeline.py",  # the whole demo, sandboxed
    "test_sandbox.py",  # the sandbox harness itself, with real processes
    "test_train_distributed.py",  # torchrun with gloo
    "test_properties.py",  # hypothesis searches
    "test_trainer.py",  # trains and resumes
    "test_noise.py",  # the real command's whole stderr, one process per case
    "test_fault_injection.py",  # real processes under a file-size limit, damaged stores, two runs at once
    "test_bigwig_faults.py",  # writers under a file-size limit, in child processes
    "test_demo.py",  # the demo's data (a 4.6 Mb genome, bigWigs, a VCF), made once: ~18 s
}


#: Single tests in the slow tier (every parametrization of ``file::test``, or one ``file::test[id]``):
#: each took over a second (all its cases together, on a loaded 2-core machine: about 0.3 s idle) in a
#: measured run of the whole suite: whole scoring or explain runs, shards and resumes, nulls,
#: PNGs, the demo genome. The fast tier keeps at least one test of a fraction of a second for each
#: core invariant: batch size (test_model.py::test_fast_path_deterministic_at_any_batch_size,
#: test_inference_engine.py::test_batch_size_does_not_change_values[epiformer], test_incremental.py,
#: test_dataset.py), ref/alt sign flip (test_score_variants.py::test_swapping_ref_and_alt_flips_diff),
#: reverse complement (test_strand.py, test_encoding.py, the rc test of test_inference_engine.py),
#: one-line errors (test_one_line_errors.py, test_usage_errors.py, test_score_variants.py::
#: test_cli_errors_are_one_line), atomic outputs (test_files.py, test_faults.py, test_never_destroy.py).
SLOW_TESTS = {
    # test_api.py
    "test_api.py::test_score_variants_table_equals_the_commands_tsv",
    # test_bounds.py
    "test_bounds.py::test_predict_refuses_a_batch_that_cannot_fit_before_any_work",
    "test_bounds.py::test_the_cli_refuses_each_range_in_one_stderr_line",
    "test_bounds.py::test_the_ism_estimates_match_the_kept_reference_and_the_span_arrays",
    "test_bounds.py::test_the_null_estimate_is_within_2x_of_a_measured_peak",
    # test_calibration.py
    "test_calibration.py::test_a_killed_null_resumes_to_the_same_file",
    "test_calibration.py::test_calibrated_columns_follow_from_the_null_file",
    "test_calibration.py::test_calibrated_fields_in_the_vcf_and_standard_output",
    "test_calibration.py::test_cli_plots_and_refusals_in_one_line",
    "test_calibration.py::test_null_draw_is_uniform_over_acgt_bases_seeded_and_skips_blacklist",
    "test_calibration.py::test_null_file_is_reused_and_a_mismatch_refused",
    "test_calibration.py::test_plot_data_reads_the_same_values_from_tsv_and_vcf_outputs",
    "test_calibration.py::test_random_snvs_get_uniform_p_values",
    "test_calibration.py::test_shards_share_the_null_and_give_the_unsharded_file",
    "test_calibration.py::test_two_processes_at_once_score_each_part_of_the_null_once",
    # test_calibration_plots.py
    "test_calibration_plots.py::test_a_million_alleles_stay_fast_and_small",
    "test_calibration_plots.py::test_legends_sit_outside_the_data_and_lambda_is_explained",
    "test_calibration_plots.py::test_many_tracks_get_a_grid_capped_at_16",
    "test_calibration_plots.py::test_one_track_writes_three_pngs",
    "test_calibration_plots.py::test_three_tracks_one_without_alleles",
    "test_calibration_plots.py::test_top_variants_ranked_by_effect_capped_and_coloured_by_sign",
    # test_cli.py
    "test_cli.py::test_errors_are_one_line_without_traceback",
    "test_cli.py::test_usage_errors_exit_2",
    # test_defaults_compose.py
    "test_defaults_compose.py::test_each_preset_note_counts_the_built_network_s_parameters",
    # test_evaluate.py
    "test_evaluate.py::test_auroc_and_auprc_agree_with_scikit_learn_on_random_ties",
    "test_evaluate.py::test_bigwigs_of_a_model_with_other_tracks_and_a_hostile_name",
    "test_evaluate.py::test_end_to_end_on_the_store_writes_every_output",
    "test_evaluate.py::test_per_track_pearson_is_trains_test_pearson",
    "test_evaluate.py::test_refusals_are_one_line_exit_2",
    # test_explain.py
    "test_explain.py::test_a_failed_run_resumes_and_ends_identical",
    "test_explain.py::test_cli_explain_top_takes_a_count_and_a_folder",
    "test_explain.py::test_cli_writes_the_outputs_and_says_so",
    "test_explain.py::test_contributions_of_the_reverse_complement_are_mirrored",
    "test_explain.py::test_finished_results_are_refused_without_force",
    "test_explain.py::test_gradient_matches_finite_differences",
    "test_explain.py::test_ism_equals_plain_per_mutant_passes",
    "test_explain.py::test_outputs_agree_with_each_other",
    "test_explain.py::test_progress_ends_at_its_total",
    "test_explain.py::test_score_variants_explains_its_strongest_variants_across_shards",
    "test_explain.py::test_shards_run_one_after_another_equal_the_unsharded_run",
    "test_explain.py::test_too_many_mutants_are_refused_with_a_time_estimate",
    "test_explain.py::test_variant_plots_mark_the_motif_the_variant_overlaps",
    "test_explain.py::test_variants_ref_and_alt_flip_the_sign",
    # test_explain_peaks.py
    "test_explain_peaks.py::test_shards_choose_the_same_peaks_and_equal_the_whole_run",
    # test_explain_plots.py
    "test_explain_plots.py::test_all_zero_matrix",
    "test_explain_plots.py::test_names_from_the_users_files_are_drawn_literally",
    "test_explain_plots.py::test_one_base_region",
    "test_explain_plots.py::test_region_overwrites_an_existing_file",
    "test_explain_plots.py::test_region_panels_stack_without_a_band",
    "test_explain_plots.py::test_region_png_depends_on_the_data",
    "test_explain_plots.py::test_region_shades_exactly_the_summed_bins_and_says_their_sum",
    "test_explain_plots.py::test_variant_alt_panel_is_in_the_alt_sequences_coordinates",
    "test_explain_plots.py::test_variant_png",
    # test_faults.py
    "test_faults.py::test_wait_returns_when_the_holder_has_written_the_piece",
    # test_figures.py
    "test_figures.py::test_latex_is_off_in_a_process_that_imports_matplotlib_through_the_tool",
    # test_identity.py
    "test_identity.py::test_a_null_is_not_reused_after_the_middle_of_the_fasta_changed",
    # test_incremental.py
    "test_incremental.py::test_batched_propagation_equals_one_at_a_time",
    "test_incremental.py::test_fast_path_equals_full_forward",
    # test_inference_engine.py
    "test_inference_engine.py::test_thread_count_does_not_change_values",
    # test_input_quirks.py
    "test_input_quirks.py::test_damaged_compressed_vcf_is_refused_naming_the_last_record_read",
    "test_input_quirks.py::test_multi_sample_vcf_output_keeps_the_genotypes_and_adds_the_same_info",
    "test_input_quirks.py::test_plain_gzip_vcf_from_a_pipe",
    "test_input_quirks.py::test_plain_gzip_vcf_from_standard_input",
    "test_input_quirks.py::test_plain_gzip_vcf_shards_and_resumes_like_the_clean_one",
    "test_input_quirks.py::test_predict_regions_from_a_quirky_bed_equal_the_clean_ones",
    "test_input_quirks.py::test_vcf_output_of_a_quirk_equals_the_clean_one",
    "test_input_quirks.py::test_vcf_quirks_score_exactly_like_the_clean_vcf",
    # test_layers.py
    "test_layers.py::test_the_import_graph_is_read",
    # test_model.py
    "test_model.py::test_every_preset_has_128_bp_bins",
    "test_model.py::test_full_size_parameter_count_and_output_shape",
    # test_motif_database.py
    "test_motif_database.py::test_jaspar_vertebrates_is_the_newest_release_latest_versions_without_pseudocounts",
    "test_motif_database.py::test_write_meme_is_atomic_takes_handles_and_gzip_and_memelite_reads_it",
    # test_motif_report.py
    "test_motif_report.py::test_cross_track_table_holds_the_seqlets_of_each_motif_and_track",
    "test_motif_report.py::test_one_embedded_png_per_logo_and_nothing_fetched",
    "test_motif_report.py::test_seqlet_table_and_pattern_rows",
    # test_never_destroy.py
    "test_never_destroy.py::test_a_closed_standard_output_ends_the_command_quietly",
    "test_never_destroy.py::test_a_fifo_output_is_written_into_as_a_stream",
    "test_never_destroy.py::test_an_interrupted_explain_top_is_resumed_by_the_same_command",
    "test_never_destroy.py::test_dev_null_is_a_stream_not_a_file_to_replace",
    "test_never_destroy.py::test_explain_never_writes_into_a_folder_of_the_users",
    "test_never_destroy.py::test_the_demo_never_writes_into_a_folder_of_the_users",
    # test_null_cache.py
    "test_null_cache.py::test_a_model_changed_in_place_gets_a_null_of_its_own",
    "test_null_cache.py::test_a_second_vcf_and_a_pipe_reuse_the_cached_null",
    "test_null_cache.py::test_a_slow_null_is_refused_in_one_line_before_it_is_scored",
    "test_null_cache.py::test_a_track_subset_fills_the_cache_for_every_track",
    "test_null_cache.py::test_an_entry_not_made_for_this_run_is_never_used",
    "test_null_cache.py::test_an_unwritable_cache_keeps_the_null_in_memory",
    "test_null_cache.py::test_cache_list_and_clear",
    "test_null_cache.py::test_clustered_snvs_share_windows_and_stay_uniform",
    "test_null_cache.py::test_the_null_progress_moves_by_groups_of_windows",
    "test_null_cache.py::test_two_runs_at_once_share_one_null_one_computes_the_other_waits",
    # test_option_meanings.py
    "test_option_meanings.py::test_a_missing_conditional_option_is_one_line_and_its_help_says_required",
    "test_option_meanings.py::test_predict_writes_the_same_bigwigs_either_way",
    "test_option_meanings.py::test_score_variants_writes_the_same_rows_either_way",
    # test_predict.py
    "test_predict.py::test_bad_shard_specs_exit_2",
    "test_predict.py::test_killed_and_resumed_equals_uninterrupted",
    "test_predict.py::test_reads_are_bounded_by_the_batch_not_the_chromosome",
    "test_predict.py::test_sharded_runs_plus_export_equal_one_run",
    # test_pseudobulk.py
    "test_pseudobulk.py::test_cli_exit_codes_and_one_line",
    "test_pseudobulk.py::test_coverage_and_raw_counts",
    "test_pseudobulk.py::test_duplicates_once_or_as_counted",
    "test_pseudobulk.py::test_file_order_does_not_matter",
    "test_pseudobulk.py::test_groups_of_cell_types_give_the_same_signal",
    "test_pseudobulk.py::test_insertions_per_million_fragments_base_by_base",
    "test_pseudobulk.py::test_qc_table_and_targets_sheet",
    "test_pseudobulk.py::test_repeated_barcodes_of_two_samples_are_kept_apart",
    "test_pseudobulk.py::test_resumes_at_the_first_unfinished_chromosome",
    # test_refusal_words.py
    "test_refusal_words.py::test_every_key_of_every_real_record_has_a_name",
    # test_score_batching.py
    "test_score_batching.py::test_batched_alleles_equal_one_at_a_time",
    "test_score_batching.py::test_chunk_size_changes_batches_not_results_beyond_tolerance",
    "test_score_batching.py::test_plain_path_is_exact_at_any_grouping",
    # test_score_variants.py
    "test_score_variants.py::test_batch_size_and_chunk_size_do_not_change_results",
    "test_score_variants.py::test_cli_stdin_to_stdout_with_env_only",
    "test_score_variants.py::test_fast_path_equals_plain_path",
    "test_score_variants.py::test_model_with_conservation_needs_cons_or_an_explicit_no_cons",
    "test_score_variants.py::test_shards_and_resume_give_the_same_file",
    "test_score_variants.py::test_slurm_array_tasks_share_the_chunks_and_the_last_one_assembles",
    # test_standing_items.py
    "test_standing_items.py::test_a_cut_short_gzip_vcf_with_a_byte_order_mark_is_refused",
    "test_standing_items.py::test_a_store_without_validation_windows_leaves_no_run_folder_and_the_fixed_rerun_works",
    "test_standing_items.py::test_a_vcf_without_contig_lines_with_some_names_of_the_fasta_is_scored",
    "test_standing_items.py::test_resume_checks_an_option_typed_at_its_default_value",
    # test_text_output.py
    "test_text_output.py::test_a_resumed_run_with_the_default_format_matches_an_explicit_tsv",
    "test_text_output.py::test_cli_refuses_a_format_the_name_contradicts_in_one_line",
    "test_text_output.py::test_score_variants_tsv_gz_reads_back_as_the_tsv",
    "test_text_output.py::test_score_variants_vcf_gz_and_bcf_hold_the_vcf_outputs_records",
    # test_threads.py
    "test_threads.py::test_a_bad_thread_count_is_one_usage_line_before_any_work",
    "test_threads.py::test_a_users_wait_policy_and_env_threads_are_kept",
    "test_threads.py::test_the_entry_points_do_not_import_torch_before_the_policy",
    "test_threads.py::test_threads_and_the_wait_policy_in_a_child_process",
    "test_threads.py::test_threads_are_not_part_of_a_runs_identity",
    # test_train.py
    "test_train.py::test_resume_refuses_other_settings_and_a_missing_run",
    # test_usage_errors.py
    "test_usage_errors.py::test_a_missing_required_parameter",
    "test_usage_errors.py::test_a_word_for_a_number",
    "test_usage_errors.py::test_an_unknown_flag",
    "test_usage_errors.py::test_exact_lines",
    "test_usage_errors.py::test_through_a_real_process",
    "test_inference_engine.py::test_batch_size_does_not_change_values[published]",  # [epiformer] stays
    # measured in the fast tier on an idle machine: seconds each (first compiles, real training)
    "test_motif_scan.py::test_hits_on_20kb_are_memelites",
    "test_motif_database.py::test_jaspar_is_read_once_per_process",
    "test_motifs.py::test_too_few_seqlets_says_how_many_regions_to_explain",
    "test_standing_items.py::test_a_non_finite_training_loss_exits_1_with_one_line",
}


#: files holding tests of minutes (the README's examples, the whole demo, processes killed and resumed),
#: longest first (a CI run's durations, 2026-12-07): xdist hands them out first (see pytest_configure),
#: so the run ends on short files with both workers busy, not on one long test with a core idle
LONGEST_FIRST = ("test_readme.py", "test_demo_pipeline.py", "test_kill_resume.py", "test_fuzz_cli.py",
                 "test_fault_injection.py", "test_motifs.py", "test_never_destroy.py", "test_demo.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        test = f"{item.path.name}::{item.nodeid.split('::', 1)[-1]}"
        if item.path.name in SLOW_MODULES or test in SLOW_TESTS or test.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist (the test extra)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (addopts): one worker per core for a run of whole folders (the README's command,
    the fast tier); none for a run naming test files or tests, where starting workers (each imports
    torch and collects) costs more than it saves. ``-n N`` on the command line overrides both."""
    if any(not Path(str(arg).split("::")[0]).is_dir() for arg in config.args):
        return 0
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the user's count, read by xdist
    # the CPUs this process may use (xdist's own count is the physical cores when psutil is
    # installed: 1 on a 2-vCPU machine)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        # xdist's --dist loadfile would otherwise hand out the files with most tests first, and the
        # longest files hold one or two tests: they started last and ran alone at the end
        config.option.loadscopereorder = False
    if hasattr(config, "workerinput"):  # an xdist worker: the workers share the cores
        import torch

        # one thread per worker, here and in every command a test runs (in process or as a child)
        os.environ["EPIFORMER_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def identity_cache(tmp_path_factory, monkeypatch):
    """Every test's file identities are cached in a folder of its own, never in the real
    ~/.cache/epiformer (set in the environment, so commands run as child processes see it too)."""
    folder = tmp_path_factory.mktemp("identity-cache")
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(folder))
    numba_cache = os.environ.get("NUMBA_CACHE_DIR")
    yield folder
    # a command run in-process (the demo, motifs) points numba at its folder for the process's life:
    # a later test of the same worker (pytest-xdist) must not inherit another test's folder
    if numba_cache is None:
        os.environ.pop("NUMBA_CACHE_DIR", None)
    else:
        os.environ["NUMBA_CACHE_DIR"] = numba_cache


@pytest.fixture
def random_seq():
    rng = np.random.default_rng(0)

    def make(length: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=length))

    return make
