// Command cellctl is the operator's CLI: build an image, flash it, push an update,
// verify an audit export, ask a cell for its status. Thin, like gokrazy's gok: each
// subcommand lives in a file of its own and registers itself in commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// CLI carries the process's standard streams and arguments so that every subcommand
// can be run in process by tests.
type CLI struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// command is one subcommand: a one-line summary and the function that runs it with
// the arguments after its name (for "image build", the words after "image").
type command struct {
	summary string
	run     func(c *CLI, args []string) error
}

// commands is filled by the init functions of the subcommand files.
var commands = map[string]command{}

func register(name, summary string, run func(c *CLI, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("cellctl: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

var errUsage = errors.New("usage")

// Run runs the subcommand named by args[0].
func (c *CLI) Run(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		c.usage()
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		c.usage()
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd.run(c, args[1:])
}

func (c *CLI) usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: cellctl <command> [flags]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, commands[n].summary)
	}
	io.WriteString(c.Stderr, b.String())
}

// newFlagSet returns a flag set that reports to the CLI's stderr and returns errors
// instead of exiting.
func (c *CLI) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("cellctl "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	return fs
}

func main() {
	c := &CLI{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := c.Run(os.Args[1:]); err != nil {
		if !errors.Is(err, errUsage) && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cellctl:", err)
		}
		os.Exit(1)
	}
}
