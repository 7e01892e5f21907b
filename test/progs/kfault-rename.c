// SPDX-License-Identifier: Apache-2.0
/*
 * kfault-rename: renames itself (prctl PR_SET_NAME, the comm the kernel and BPF see), then opens
 * a file, as a container process that tries to pass for its runtime's init. A fault must not
 * care about the name.
 *
 * Usage: kfault-rename NAME PATH
 * Prints "comm <name as read back>" and then "open PATH ok" (exit 0) or
 * "open PATH: <strerror>" (exit 1). Writes to stdout only: it opens nothing but PATH.
 * Exit status 2 on bad usage or when the rename fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s NAME PATH\n", argv[0]);
		return 2;
	}
	char comm[17] = {0};
	if (prctl(PR_SET_NAME, argv[1], 0, 0, 0) || prctl(PR_GET_NAME, comm, 0, 0, 0)) {
		printf("prctl: %s\n", strerror(errno));
		return 2;
	}
	printf("comm %s\n", comm);
	int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("open %s: %s\n", argv[2], strerror(errno));
		fflush(stdout);
		return 1;
	}
	close(fd);
	printf("open %s ok\n", argv[2]);
	fflush(stdout);
	return 0;
}
