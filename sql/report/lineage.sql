-- How this run's clusters relate to the next coarser and finer k of its sweep (cluster_lineage).
SELECT name_coarse, k_coarse, cluster_coarse, name_fine, k_fine, cluster_fine, places, share_of_coarse
FROM cluster_lineage
WHERE run_coarse = $run OR run_fine = $run
ORDER BY k_coarse, cluster_coarse, places DESC, cluster_fine;
