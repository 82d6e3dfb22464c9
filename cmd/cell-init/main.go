// Command cell-init is the init (PID 1) of the cell's firmware image, what
// gokrazy's packer would otherwise generate: gokrazy.Boot, then the programs of
// /etc/cell/release.json supervised by gokrazy. Before gokrazy.Boot it grows
// the data partition to the card's end on a first boot (perm.go) and takes the
// hardware watchdog, which it feeds only while the cell lives (watchdog.go). Between the two it runs the
// trial switch of firmware/update: a freshly written root is booted once, by
// switching into it from the old root's init, and made permanent only when the
// cell reports healthy. Before the programs start it copies the setup code from
// the boot partition, which nothing mounts, to /run/cell for the cell daemon
// (setupcode.go), and, when the release runs containerd, makes its directory
// on /perm and checks the cgroup v2 hierarchy; once containerd's API answers it
// says so on the console (containerd.go), as it does once the cell's /health
// first says ok (healthlog.go).
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/gokrazy/gokrazy"
	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/release"
	"github.com/pic-cell/cell/firmware/update"
)

func main() {
	if err := run(); err != nil {
		// PID 1 exiting panics the kernel, and panic=10 on the command line
		// turns that into a reboot (during a trial: into the old root).
		log.Fatal(err)
	}
}

func run() error {
	growPermAtBoot() // the data partition fills the disk on a first boot, before it is mounted (perm.go)
	startWatchdog()  // before gokrazy.Boot, whose own pinger would take the device (watchdog.go)
	if err := gokrazy.Boot(""); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "firmware")
	rel, err := release.Load(release.Path)
	if err != nil {
		return err
	}
	logger.Info("booting", "version", rel.Version, "target", rel.Target)
	clockFloor(rel.Built, time.Now(), setClock, logger) // no board clock: not before the build (clock.go)

	trial, onTrial := trialAtBoot(rel, logger)
	setupCodeAtBoot(logger)
	containerd := runsContainerd(rel)
	if containerd {
		// Logged, never fatal: the cell runs without containerd (its
		// services answer 503 saying so).
		if err := prepareContainerd(containerdPerm, cgroupRoot, kernelCgroups{}); err != nil {
			logger.Error("containerd", "err", err)
		}
		have, missing, err := cgroupControllers(cgroupRoot)
		switch {
		case err != nil:
			logger.Error("cgroup controllers", "err", err)
		case len(missing) > 0:
			logger.Warn("the kernel lacks cgroup controllers: the services' limits of these kinds are not enforced",
				"missing", strings.Join(missing, " "), "controllers", strings.Join(have, " "))
		default:
			logger.Info("cgroup controllers", "controllers", strings.Join(have, " "))
		}
	}

	var services []*gokrazy.Service
	for _, s := range rel.Services {
		cmd := exec.Command(s.Path, s.Args...)
		cmd.Env = append(cmd.Environ(), s.Env...)
		services = append(services, gokrazy.NewService(cmd))
	}
	if err := gokrazy.SuperviseServices(services); err != nil {
		return err
	}
	go logHealth(context.Background(), logger, rel.HealthURL, 2*time.Second, 5*time.Minute)
	if containerd {
		go watchContainerd(context.Background(), logger, containerdSocket, "/proc", 5*time.Minute, 15*time.Second)
	}
	if onTrial {
		go func() {
			if err := trial.Watch(context.Background()); err != nil {
				logger.Error("trial", "err", err)
			}
		}()
	}
	select {}
}

// trialAtBoot runs the trial switch. Its errors are logged, never fatal: a
// device that cannot read its update state must still come up on the root it has.
func trialAtBoot(rel *release.Release, logger *slog.Logger) (*update.Trial, bool) {
	slots := update.BlockSlots{}
	bootPath, err := slots.BootPath()
	if err != nil {
		logger.Error("boot partition not found; updates disabled", "err", err)
		return nil, false
	}
	t := &update.Trial{
		Release:    rel,
		Slots:      slots,
		Boot:       update.FATBoot{Open: update.OpenFile(bootPath)},
		State:      update.StateFile{Path: update.DefaultStatePath},
		Log:        logger,
		SwitchRoot: func(slot int) error { return switchRoot(slots, slot) },
		Reboot:     reboot,
	}
	onTrial, err := t.AtBoot()
	if err != nil {
		logger.Error("trial switch", "err", err)
	}
	return t, onTrial
}

// setupCodeAtBoot hands the cell daemon the setup code from the boot partition
// (copySetupCode). Its errors are logged, never fatal: the daemon then makes a
// code of its own and writes it to the console.
func setupCodeAtBoot(logger *slog.Logger) {
	bootPath, err := update.BlockSlots{}.BootPath()
	if err != nil {
		logger.Error("boot partition not found; no setup code from it", "err", err)
		return
	}
	ok, err := copySetupCode(bootPath, release.SetupCodePath)
	switch {
	case err != nil:
		logger.Error("setup code from the boot partition", "err", err)
	case ok:
		logger.Info("setup code copied from the boot partition", "file", release.SetupCodePath)
	}
}

// switchRoot mounts the root in slot and makes it the root of this process, then
// executes its init, as gokrazy's own try_boot_inactive switch does. The old
// root's mounts (/perm among them) stay underneath, unreachable; the new init
// mounts its own.
func switchRoot(slots update.BlockSlots, slot int) error {
	node, err := slots.Node(slot)
	if err != nil {
		return err
	}
	const mnt = "/tmp/cell-trial-root"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(node, mnt, "squashfs", syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s: %w", node, err)
	}
	if _, err := os.Stat(mnt + "/gokrazy/init"); err != nil {
		syscall.Unmount(mnt, 0)
		return fmt.Errorf("new root has no init: %w", err)
	}
	if err := os.Chdir(mnt); err != nil {
		return err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move mount: %w", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	// Past the move there is no way back into the old root: if exec fails, the
	// only sound thing is to end PID 1, which reboots into the old root.
	err = syscall.Exec("/gokrazy/init", []string{"/gokrazy/init"}, os.Environ())
	log.Fatalf("exec new init: %v", err)
	return err
}

// reboot asks gokrazy to stop the services and reboot; if that fails it reboots
// directly, after a sync.
func reboot() error {
	err := update.GokrazyReboot()
	if err == nil {
		return nil
	}
	log.Printf("gokrazy reboot: %v; rebooting directly", err)
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
