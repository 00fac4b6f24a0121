/* DPDK's side of `cargo xtask bench clock`: reads of the TSC through DPDK's public inline
 * functions, and DPDK's own TSC frequency estimate (rte_eal_init, then rte_get_tsc_hz).
 * Our own code calling DPDK's public API; every symbol is prefixed `clock_`. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>

/* n reads of rte_rdtsc() (a bare rdtsc), summed so none is optimised away. */
uint64_t clock_dpdk_rdtsc_loop(uint64_t n)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < n; i++)
		acc += rte_rdtsc();
	return acc;
}

/* n reads of rte_rdtsc_precise() (mfence; rdtsc). */
uint64_t clock_dpdk_rdtsc_precise_loop(uint64_t n)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < n; i++)
		acc += rte_rdtsc_precise();
	return acc;
}

/* n reads of rte_get_timer_cycles() (the TSC in Debian's build: RTE_LIBEAL_USE_HPET is off). */
uint64_t clock_dpdk_timer_cycles_loop(uint64_t n)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < n; i++)
		acc += rte_get_timer_cycles();
	return acc;
}

/* Initialise the EAL with no hugepages, no PCI and nothing on disk, and return DPDK's TSC
 * frequency (rte_get_tsc_hz) and the time rte_eal_init took; 0 on success. Only once per
 * process. */
int clock_dpdk_eal_tsc_hz(uint64_t *hz, double *init_ms)
{
	char *argv[] = {"clock-bench", "-l", "0", "--no-huge", "-m", "64", "--no-pci",
			"--no-shconf", "--file-prefix=hugeshare-clock-bench", "--no-telemetry", "--log-level=lib.eal:error", NULL};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (rte_eal_init(argc, argv) < 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*init_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	*hz = rte_get_tsc_hz();
	/* Leave nothing behind: the EAL creates an (empty, with --no-shconf) runtime directory. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", rte_eal_get_runtime_dir());
	rte_eal_cleanup();
	rmdir(dir);
	return 0;
}
