/* SPDX-License-Identifier: MIT OR Apache-2.0
 * DPDK's side of `cargo xtask bench mempool`: DPDK 22.11's rte_mempool (ring_mp_mc ops) in the
 * loop shape of mempool_perf_autotest (get `keep` objects in bulks of `bulk`, put them back),
 * called through DPDK's public inline API. Our own code; nothing copied from DPDK.
 * Every symbol starts with `mempool_` so the benchmark files do not clash.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_mempool.h>
#include <rte_errno.h>

static struct rte_mempool *mempool_pools[2];
static char mempool_runtime_dir[PATH_MAX];

struct mempool_job {
	struct rte_mempool *mp;
	unsigned bulk, keep;
	double secs;
	volatile uint32_t *go;
	uint64_t objs;
	uint64_t cyc;
	int err;
};

static struct mempool_job mempool_jobs[RTE_MAX_LCORE];

/* Initialise the EAL in this process (no hugepages, no shared config, lcores 0-1) and create the two
 * pools (4095 objects of 2048 bytes, no cache and a 512-object cache). Returns the number of
 * lcores, or -1. */
int mempool_dpdk_init(void)
{
	/* --in-memory is refused with --no-huge in 22.11 ("--legacy-mem is not compatible with
	 * --in-memory"); --no-shconf keeps nothing shared on disk instead. */
	char *argv[] = {"mempool-bench", "-l", "0-1", "--no-huge", "-m", "256", "--no-pci",
			"--no-shconf", "--file-prefix=hugeshare-mempool-bench", "--no-telemetry",
			"--log-level=lib.eal:error", NULL};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
	if (rte_eal_init(argc, argv) < 0)
		return -1;
	snprintf(mempool_runtime_dir, sizeof(mempool_runtime_dir), "%s", rte_eal_get_runtime_dir());
	mempool_pools[0] = rte_mempool_create("mpb_nocache", 4095, 2048, 0, 0,
					      NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
	mempool_pools[1] = rte_mempool_create("mpb_cache", 4095, 2048, 512, 0,
					      NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
	if (!mempool_pools[0] || !mempool_pools[1])
		return -1;
	return (int)rte_lcore_count();
}

static int mempool_worker(void *arg)
{
	struct mempool_job *j = arg;
	void *tab[512];
	struct rte_mempool_cache *c = rte_mempool_default_cache(j->mp, rte_lcore_id());
	uint64_t hz = rte_get_tsc_hz(), n = 0, t0, stop;
	unsigned r, i;

	while (__atomic_load_n(j->go, __ATOMIC_ACQUIRE) == 0)
		rte_pause();
	t0 = rte_rdtsc();
	stop = t0 + (uint64_t)(j->secs * hz);
	do {
		for (r = 0; r < 64; r++) {
			for (i = 0; i < j->keep; i += j->bulk)
				if (rte_mempool_generic_get(j->mp, &tab[i], j->bulk, c) < 0) {
					j->err = 1;
					return -1;
				}
			for (i = 0; i < j->keep; i += j->bulk)
				rte_mempool_generic_put(j->mp, &tab[i], j->bulk, c);
			n += j->keep;
		}
	} while (rte_rdtsc() < stop);
	j->cyc = rte_rdtsc() - t0;
	j->objs = n;
	return 0;
}

/* One point: `cores` lcores (1 or 2) run the loop for `secs`; returns objects got and put per
 * second, all cores added (total objects / mean time per core), or a negative value on error. */
double mempool_dpdk_run(int cache, unsigned cores, unsigned bulk, unsigned keep, double secs)
{
	volatile uint32_t go = 0;
	unsigned lc, used = 0;
	uint64_t tot = 0, cyc = 0;
	int err = 0;

	RTE_LCORE_FOREACH(lc) {
		if (used == cores)
			break;
		mempool_jobs[lc] = (struct mempool_job){mempool_pools[cache ? 1 : 0], bulk, keep,
							secs, &go, 0, 0, 0};
		if (lc != rte_get_main_lcore())
			rte_eal_remote_launch(mempool_worker, &mempool_jobs[lc], lc);
		used++;
	}
	if (used < cores)
		return -1.0;
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	mempool_worker(&mempool_jobs[rte_get_main_lcore()]);
	rte_eal_mp_wait_lcore();
	used = 0;
	RTE_LCORE_FOREACH(lc) {
		if (used == cores)
			break;
		tot += mempool_jobs[lc].objs;
		cyc += mempool_jobs[lc].cyc;
		err |= mempool_jobs[lc].err;
		used++;
	}
	if (err || cyc == 0)
		return -1.0;
	double sec = (double)cyc / cores / (double)rte_get_tsc_hz();
	return (double)tot / sec;
}

/* Release the EAL's resources at the end of the run and remove its (empty) runtime directory. */
void mempool_dpdk_cleanup(void)
{
	rte_eal_cleanup();
	if (mempool_runtime_dir[0])
		rmdir(mempool_runtime_dir);
}
