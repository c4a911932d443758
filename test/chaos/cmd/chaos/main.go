// Command chaos runs every chaos scenario (test/chaos) against habring in args mode,
// habring in watch-file mode and the seed's bootstrap StatefulSet, on a local control plane
// whose pods really run, and prints a table. `make chaos` runs it; it needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/habring/habring/test/chaos"
	"github.com/habring/habring/test/harness"
)

func main() {
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory: cluster, logs, every container's output (default: a new temporary one, removed when all passed)")
	only := fs.String("scenario", "", "run only scenarios whose name matches this regular expression")
	settle := fs.Duration("settle", 90*time.Second, "how long a ring gets to become one ring with one leader after a disruption")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `chaos: the same disruptions against habring (args and watch-file mode) and the seed's
bootstrap StatefulSet, on a local control plane whose pods really run (needs root,
iproute2, util-linux). Prints a table, then as its last line
  chaos: habring A/N scenarios ended in one ring with one leader; bootstrap StatefulSet B/N
and exits 1 when A < N.

Flags:
`)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, *dir, *only, *settle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(ctx context.Context, dir, only string, settle time.Duration) (int, error) {
	re, err := regexp.Compile(only)
	if err != nil {
		return 0, fmt.Errorf("--scenario: %w", err)
	}
	var scenarios []chaos.Scenario
	for _, s := range chaos.Scenarios {
		if re.MatchString(s.Name) {
			scenarios = append(scenarios, s)
		}
	}
	if len(scenarios) == 0 {
		return 0, fmt.Errorf("--scenario %q matches no scenario", only)
	}
	keep := dir != ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "habring-chaos-"); err != nil {
			return 0, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return 0, err
	}
	st, err := harness.StartStack(ctx, dir, 200, os.Stderr)
	if err != nil {
		return 0, fmt.Errorf("%w (logs in %s)", err, dir)
	}
	defer st.Stop()
	fmt.Fprintf(os.Stderr, "chaos: %d scenario(s) × %d setups, the setups side by side; up to %s each to settle\n", len(scenarios), len(chaos.Setups), settle)
	start := time.Now()
	results := chaos.Run(ctx, chaos.Env{Client: st.Client, Config: st.Cluster.Config, Runner: st.Runner, Progress: os.Stderr, Settle: settle},
		scenarios, chaos.Setups)
	fmt.Println()
	table(results)
	a, b := chaos.Tally(results)
	fmt.Printf("\n%d scenarios in %s; logs in %s\n", len(scenarios), time.Since(start).Round(time.Second), dir)
	fmt.Printf("chaos: habring %d/%d scenarios ended in one ring with one leader; bootstrap StatefulSet %d/%d\n", a, len(scenarios), b, len(scenarios))
	if a < len(scenarios) {
		return 1, nil
	}
	if !keep {
		st.Stop()
		_ = os.RemoveAll(dir)
	}
	return 0, nil
}

func table(results []chaos.Result) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSETUP\tRINGS\tLEADERS\tONE RING + ONE LEADER AFTER\tDEAD IN QUORUM")
	for _, r := range results {
		settled := "never"
		switch {
		case r.Err != nil:
			settled = "error: " + r.Err.Error()
		case r.Settled > 0:
			settled = fmt.Sprintf("%.1f s", r.Settled.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\n", r.Scenario, r.Setup, r.Final.Rings, r.Final.Leaders, settled, r.Final.Confirmed)
	}
	_ = tw.Flush()
}
