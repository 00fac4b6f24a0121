/* DPDK's side of `cargo xtask bench attach`: a process that runs rte_eal_init() with the given
 * arguments, prints READY (or ERROR), then waits for its standard input to close and cleans up.
 * The benchmark times the whole process, exec to READY, exactly as it times hugeshare's agent.
 * Our own code, calling DPDK's public API. */
#include <stdio.h>
#include <rte_eal.h>

int attach_dpdk_main(int argc, char **argv)
{
	int r = rte_eal_init(argc, argv);
	if (r < 0) {
		printf("ERROR rte_eal_init failed\n");
		fflush(stdout);
		return 1;
	}
	printf("READY\n");
	fflush(stdout);
	char buf[128];
	while (fgets(buf, sizeof buf, stdin) != NULL) {
	}
	rte_eal_cleanup();
	return 0;
}
