// SPDX-License-Identifier: Apache-2.0
/*
 * kfault-victim: a workload for fault-injection tests that keeps working while its own cgroup
 * has 100% slab or page faults. It does all of its setup (files, pipes, memory) first, then
 * waits for a "go" byte, then performs one operation N times, recording each result in shared
 * memory, without fork, exec or I/O to anything that allocates.
 *
 * Build: gcc -static -O2 -o out/progs/kfault-victim test/progs/kfault-victim.c
 *
 * Usage: kfault-victim OP N [PATH]
 *   OP: slab  eventfd() + close()           (kmalloc: ENOMEM under a slab fault)
 *       page  write 4 KiB to a pipe + drain  (alloc_page: ENOMEM under a page fault)
 *       bio   pread 4 KiB with O_DIRECT from PATH (default /dev/nullb0; EIO under a bio fault)
 *       open  openat(PATH or "/") + close()  (any errno under a function fault on openat)
 *       stat  stat(PATH)                      (call chains: a lookup of PATH's last component)
 *       mount mount a tmpfs on PATH + umount  (call chains on __x64_sys_mount)
 *       loop  like slab, timing only (benchmarks)
 *       read  read 1 byte from /dev/zero (vfs_read; benchmarks of frames on hot functions)
 *       tcp   connect to its own listener on 127.0.0.1, accept, 1 byte each way, close both
 *             (the receive side runs in NET_RX softirq on this task: the interrupt-context
 *             filter); the result's extra is the listener's drops (SO_MEMINFO) after the run
 *       The LSM allocation hooks of failtype alloc, one each:
 *       pipe   pipe2() + close both            (an inode: security_inode_alloc)
 *       socket socket(AF_INET, SOCK_DGRAM) + close (a sock: security_sk_alloc)
 *       fork   fork(), the child exits at once, waitpid (a task: security_task_alloc)
 *       creds  prctl(PR_SET_KEEPCAPS, 0)       (new credentials: security_prepare_creds)
 *       msg    msgsnd + msgrcv of 1 byte on a private queue (security_msg_msg_alloc)
 *       mmap   mmap 4 KiB anonymous, writable + munmap (security_vm_enough_memory_mm)
 * File descriptors (all optional):
 *   3  read end of the go pipe: the victim waits for one byte before the operations
 *   4  a memfd of at least sizeof(struct result) + N bytes: results are written there
 *   5  write end of the ready pipe: the victim writes one byte when set up
 * Without fd 4 the summary goes to stdout after the run.
 * Exit status: 0 when the run completed (whatever the results), 2 on bad usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

#define MAGIC 0x6b666c74u /* "kflt" */

struct result {
	uint32_t magic;
	uint32_t n;          /* operations done */
	uint32_t ok;         /* that succeeded */
	uint32_t fail;       /* that failed */
	int32_t first_errno; /* errno of the first failure */
	uint32_t extra;      /* per op: tcp: the listener's dropped packets (SYNs, ACKs) */
	uint64_t elapsed_ns; /* wall time of the N operations */
	uint8_t seq[];       /* per operation: 0 = success, else errno (capped at 255) */
};

static char iobuf[4096] __attribute__((aligned(4096)));

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s slab|page|bio|open|stat|mount|loop|read|tcp|pipe|socket|fork|creds|msg|mmap N [PATH]\n", argv[0]);
		return 2;
	}
	const char *op = argv[1];
	long n = strtol(argv[2], NULL, 10);
	const char *path = argc > 3 ? argv[3] : NULL;
	if (n <= 0 || n > 100000000) {
		fprintf(stderr, "kfault-victim: bad N %s\n", argv[2]);
		return 2;
	}

	/* Which of fds 3, 4, 5 the caller passed; decided before this program opens anything. */
	int have_go = fcntl(3, F_GETFD) >= 0;
	int have_ready = fcntl(5, F_GETFD) >= 0;

	/* Results: shared memory from fd 4, or private memory printed at the end. */
	size_t size = sizeof(struct result) + (size_t)n;
	struct result *res = NULL;
	struct stat st;
	int shared = fstat(4, &st) == 0 && (size_t)st.st_size >= sizeof(struct result);
	if (shared) {
		size_t map = (size_t)st.st_size;
		res = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_SHARED, 4, 0);
		if (res == MAP_FAILED) {
			perror("kfault-victim: mmap fd 4");
			return 2;
		}
		memset(res, 0, map); /* touch every page now, not under the fault */
		if (map < size)
			n = (long)(map - sizeof(struct result));
	} else {
		res = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (res == MAP_FAILED) {
			perror("kfault-victim: mmap");
			return 2;
		}
		memset(res, 0, size);
	}

	/* Per-operation setup. */
	int pipefd[2] = {-1, -1};
	int blk = -1;
	int zero = -1;
	int lst = -1;
	int msq = -1;
	struct {
		long mtype;
		char mtext[1];
	} msgbuf = {.mtype = 1, .mtext = {'k'}};
	struct sockaddr_in lst_addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t lst_len = sizeof(lst_addr);
	/* Generous deadlines against hangs (connect, accept, read), never expected to expire. */
	struct timeval deadline = {.tv_sec = 30};
	if (!strcmp(op, "page")) {
		if (pipe(pipefd) < 0) {
			perror("kfault-victim: pipe");
			return 2;
		}
	} else if (!strcmp(op, "bio")) {
		blk = open(path ? path : "/dev/nullb0", O_RDONLY | O_DIRECT);
		if (blk < 0) {
			perror("kfault-victim: open block device");
			return 2;
		}
	} else if (!strcmp(op, "read")) {
		zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
		if (zero < 0) {
			perror("kfault-victim: open /dev/zero");
			return 2;
		}
	} else if (!strcmp(op, "tcp")) {
		lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lst < 0 || bind(lst, (struct sockaddr *)&lst_addr, sizeof(lst_addr)) < 0 || listen(lst, 16) < 0 ||
		    getsockname(lst, (struct sockaddr *)&lst_addr, &lst_len) < 0 ||
		    setsockopt(lst, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline)) < 0) {
			perror("kfault-victim: listen on 127.0.0.1");
			return 2;
		}
	} else if (!strcmp(op, "msg")) {
		msq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		if (msq < 0) {
			perror("kfault-victim: msgget");
			return 2;
		}
	} else if ((!strcmp(op, "stat") || !strcmp(op, "mount")) && !path) {
		fprintf(stderr, "kfault-victim: %s needs a PATH\n", op);
		return 2;
	} else if (strcmp(op, "slab") && strcmp(op, "open") && strcmp(op, "loop") && strcmp(op, "stat") &&
		   strcmp(op, "mount") && strcmp(op, "pipe") && strcmp(op, "socket") && strcmp(op, "fork") &&
		   strcmp(op, "creds") && strcmp(op, "mmap")) {
		fprintf(stderr, "kfault-victim: unknown op %s\n", op);
		return 2;
	}
	if (!path)
		path = "/";
	memset(iobuf, 'k', sizeof(iobuf));
	/* Fault every page in now: a page fault under failtype 1 would retry forever. */
	mlockall(MCL_CURRENT);

	char c = 1;
	if (have_ready) {
		if (write(5, &c, 1) != 1) {
			perror("kfault-victim: ready");
			return 2;
		}
		close(5);
	}
	if (have_go) {
		if (read(3, &c, 1) != 1)
			return 2; /* the test gave up */
	}

	uint64_t t0 = now_ns();
	for (long i = 0; i < n; i++) {
		int err = 0;
		if (!strcmp(op, "slab") || !strcmp(op, "loop")) {
			int fd = eventfd(0, EFD_CLOEXEC);
			if (fd < 0)
				err = errno;
			else
				close(fd);
		} else if (!strcmp(op, "read")) {
			if (read(zero, iobuf, 1) != 1)
				err = errno ? errno : EPROTO;
		} else if (!strcmp(op, "tcp")) {
			errno = 0;
			int cl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (cl < 0) {
				err = errno;
			} else {
				int sv = -1;
				if (setsockopt(cl, SOL_SOCKET, SO_SNDTIMEO, &deadline, sizeof(deadline)) < 0 ||
				    setsockopt(cl, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline)) < 0 ||
				    connect(cl, (struct sockaddr *)&lst_addr, sizeof(lst_addr)) < 0 ||
				    (sv = accept4(lst, NULL, NULL, SOCK_CLOEXEC)) < 0 ||
				    setsockopt(sv, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline)) < 0 ||
				    write(cl, "k", 1) != 1 || read(sv, iobuf, 1) != 1 || write(sv, "f", 1) != 1 ||
				    read(cl, iobuf, 1) != 1)
					err = errno ? errno : EPROTO;
				if (sv >= 0)
					close(sv);
				close(cl);
			}
		} else if (!strcmp(op, "pipe")) {
			int fds[2];
			if (pipe2(fds, O_CLOEXEC) < 0) {
				err = errno;
			} else {
				close(fds[0]);
				close(fds[1]);
			}
		} else if (!strcmp(op, "socket")) {
			int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				err = errno;
			else
				close(fd);
		} else if (!strcmp(op, "fork")) {
			pid_t pid = fork();
			if (pid < 0)
				err = errno;
			else if (pid == 0)
				_exit(0);
			else if (waitpid(pid, NULL, 0) != pid)
				err = EPROTO;
		} else if (!strcmp(op, "creds")) {
			if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
				err = errno;
		} else if (!strcmp(op, "msg")) {
			if (msgsnd(msq, &msgbuf, 1, IPC_NOWAIT) < 0)
				err = errno;
			else if (msgrcv(msq, &msgbuf, 1, 0, IPC_NOWAIT) != 1)
				err = EPROTO;
		} else if (!strcmp(op, "mmap")) {
			void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				err = errno;
			else
				munmap(m, 4096);
		} else if (op[0] == 'p') {
			ssize_t w = write(pipefd[1], iobuf, sizeof(iobuf));
			if (w < 0)
				err = errno;
			else if (read(pipefd[0], iobuf, (size_t)w) != w)
				err = EPROTO;
		} else if (op[0] == 'b') {
			if (pread(blk, iobuf, sizeof(iobuf), 0) < 0)
				err = errno;
		} else if (!strcmp(op, "stat")) {
			struct stat sb;
			if (stat(path, &sb) < 0)
				err = errno;
		} else if (op[0] == 'm') {
			if (mount("kfault", path, "tmpfs", 0, NULL) < 0)
				err = errno;
			else if (umount2(path, MNT_DETACH) < 0)
				err = EPROTO;
		} else {
			int fd = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				err = errno;
			else
				close(fd);
		}
		res->seq[i] = (uint8_t)(err > 255 ? 255 : err);
		if (err) {
			if (!res->fail)
				res->first_errno = err;
			res->fail++;
		} else {
			res->ok++;
		}
		res->n++;
	}
	res->elapsed_ns = now_ns() - t0;
	if (lst >= 0) {
		uint32_t mem[SK_MEMINFO_VARS] = {0};
		socklen_t len = sizeof(mem);
		if (getsockopt(lst, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 && len > SK_MEMINFO_DROPS * sizeof(mem[0]))
			res->extra = mem[SK_MEMINFO_DROPS];
	}
	if (msq >= 0)
		msgctl(msq, IPC_RMID, NULL);
	res->magic = MAGIC;

	if (!shared)
		printf("n=%u ok=%u fail=%u first_errno=%d (%s) elapsed_ns=%llu extra=%u\n", res->n, res->ok, res->fail,
		       res->first_errno, res->first_errno ? strerror(res->first_errno) : "-",
		       (unsigned long long)res->elapsed_ns, res->extra);
	return 0;
}
