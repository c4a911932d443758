package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/habring/habring/internal/check"
	"github.com/habring/habring/internal/logging"
	"github.com/habring/habring/internal/render"
	"github.com/habring/habring/internal/webhook"
)

// runners are what the subcommands start; tests replace them to check flag parsing.
type runners struct {
	webhook func(context.Context, webhook.Config, *slog.Logger) error
	render  func(context.Context, render.Config, io.Reader, io.Writer, *slog.Logger) error
	check   func(context.Context, check.Config, io.Writer, io.Writer, *slog.Logger) error
	// prog is how the user ran us: "habring", or "kubectl habring" for the kubectl plugin
	// (the binary installed as kubectl-habring); empty means "habring".
	prog   string
	stdin  io.Reader
	stdout io.Writer
	// stderr is where check --wait says what it waits for.
	stderr io.Writer
	// global, when set, installs the logger process-wide (client-go logs through klog);
	// only main sets it, so parallel tests never share global state.
	global func(*slog.Logger)
}

type command struct {
	name, summary, usage string
	// more is printed after the flags in --help.
	more string
	// flags registers the command's flags on fs and returns what to run once they parse.
	flags func(fs *flag.FlagSet, r runners) func(context.Context, *slog.Logger) error
}

func commands() []command {
	return []command{
		{name: "webhook", summary: "serve the mutating admission webhook over TLS", usage: "habring webhook --tls-cert-file F --tls-key-file F --labeler-image IMAGE [flags]", flags: webhookFlags},
		{name: "render", summary: "print the pods StatefulSet/Deployment manifests would create, as habring admits them", usage: "habring render -f FILE|- [--kubeconfig K] [flags]", flags: renderFlags},
		{name: "check", summary: "check an installation and its rings, or say why one pod was (not) injected; exit 1 on any failure", usage: "habring check [--kubeconfig K] [--context C] [--namespace NS] [--pod NS/NAME] [--wait D] [-o text|json] [--list]", flags: checkFlags,
			more: "Exit status: 0 when no check failed (warnings allowed), 1 when one failed or the checks could not start\n" +
				"(the message says why), 2 for a wrong flag. -o json has the schema " + check.SchemaVersion + "; --list shows\n" +
				"every check's ID, severity and whether --wait retries it."},
	}
}

// cli runs one subcommand and returns the process exit code: 0 on success and for
// --help, 2 for a usage error, 1 when the command failed.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer, r runners) int {
	cmds := commands()
	prog := r.prog
	if prog == "" {
		prog = "habring"
	}
	for i := range cmds {
		cmds[i].usage = prog + strings.TrimPrefix(cmds[i].usage, "habring")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		topUsage(stdout, prog, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	i := slices.IndexFunc(cmds, func(c command) bool { return c.name == args[0] })
	if i < 0 {
		fmt.Fprintf(stderr, "%s: unknown command %q; run '%s --help' for the list\n", prog, args[0], prog)
		return 2
	}
	c := cmds[i]
	fs := flag.NewFlagSet(prog+" "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	run := c.flags(fs, r)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s: %s\n\nUsage: %s\n\nFlags:\n", fs.Name(), c.summary, c.usage)
		fs.PrintDefaults()
		if c.more != "" {
			fmt.Fprintf(fs.Output(), "\n%s\n", c.more)
		}
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2 // flag has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s %s: unexpected arguments %q; see '%s %s --help'\n", prog, c.name, fs.Args(), prog, c.name)
		return 2
	}
	log, err := logging.New(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", prog, c.name, err)
		return 2
	}
	if r.global != nil {
		r.global(log)
	}
	if err := run(ctx, log); err != nil {
		var usage usageError
		if errors.As(err, &usage) {
			fmt.Fprintf(stderr, "%s %s: %v\nSee '%s %s --help'.\n", prog, c.name, err, prog, c.name)
			return 2
		}
		if errors.Is(err, check.ErrChecksFailed) {
			return 1 // the report on stdout says which and how to fix them
		}
		log.Error(prog+" "+c.name+" failed", "err", err)
		return 1
	}
	return 0
}

// usageError marks a Config that failed validation: the user must change a flag.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func topUsage(w io.Writer, prog string, cmds []command) {
	fmt.Fprintln(w, "habring runs Habitat Supervisor rings on Kubernetes: an admission webhook computes each pod's peers.")
	fmt.Fprintf(w, "\nUsage: %s <command> [flags]\n\nCommands:\n", prog)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", prog)
}

func webhookFlags(fs *flag.FlagSet, r runners) func(context.Context, *slog.Logger) error {
	cfg := webhook.Defaults()
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTPS address to serve /mutate, /healthz, /readyz and /metrics on")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serving certificate (PEM); reloaded when it changes (required)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "serving key (PEM); reloaded when it changes (required)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
	fs.StringVar(&cfg.LabelerImage, "labeler-image", "", "image of the labeler sidecar, normally habring's own (required)")
	fs.IntVar(&cfg.MaxPeers, "max-peers", cfg.MaxPeers, "most --peer addresses given to one Supervisor (1-64)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "cluster DNS domain, for StatefulSet pods' stable names")
	fs.StringVar(&cfg.SidecarMode, "sidecar-mode", cfg.SidecarMode, "labeler as a native sidecar (native), a regular container (container), or native when the API server is 1.29+ (auto)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "bound on one admission's work; keep below the webhook configuration's timeoutSeconds")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", cfg.ShutdownDelay, "on SIGTERM, how long /readyz fails before the listener closes")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM, how long in-flight requests may take to finish")
	fs.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "most open connections; at the cap, connections not serving a request are closed first")
	fs.BoolVar(&cfg.EnableHTTP2, "enable-http2", cfg.EnableHTTP2, "offer HTTP/2 (off by default: CVE-2023-44487, CVE-2023-39325; the API server then uses HTTP/1.1)")
	return func(ctx context.Context, log *slog.Logger) error {
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		return r.webhook(ctx, cfg, log)
	}
}

func renderFlags(fs *flag.FlagSet, r runners) func(context.Context, *slog.Logger) error {
	cfg := render.Defaults()
	fs.StringVar(&cfg.File, "f", "", "manifests to render (multi-document YAML); - reads standard input (required)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "read the ring's live members from this cluster; empty renders offline (no live member)")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace for manifests that name none")
	fs.StringVar(&cfg.Options.LabelerImage, "labeler-image", cfg.Options.LabelerImage, "labeler sidecar image to show")
	fs.IntVar(&cfg.Options.MaxPeers, "max-peers", cfg.Options.MaxPeers, "most --peer addresses per Supervisor, as the webhook's --max-peers")
	fs.StringVar(&cfg.Options.ClusterDomain, "cluster-domain", cfg.Options.ClusterDomain, "cluster DNS domain, as the webhook's --cluster-domain")
	fs.StringVar(&cfg.SidecarMode, "sidecar-mode", cfg.SidecarMode, "labeler as a native sidecar (native) or a regular container (container)")
	return func(ctx context.Context, log *slog.Logger) error {
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		return r.render(ctx, cfg, r.stdin, r.stdout, log)
	}
}

func checkFlags(fs *flag.FlagSet, r runners) func(context.Context, *slog.Logger) error {
	cfg := check.Defaults()
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: $KUBECONFIG, ~/.kube/config, then in-cluster, as kubectl")
	fs.StringVar(&cfg.Context, "context", "", "kubeconfig context; empty: its current context")
	fs.StringVar(&cfg.Namespace, "namespace", "", "check only this namespace and its rings; empty: every namespace the webhook selects")
	fs.StringVar(&cfg.Pod, "pod", "", "namespace/name: say why this pod was or was not injected (the webhook's decision on the live state), instead of the checks")
	fs.DurationVar(&cfg.MinCertValidity, "min-cert-validity", cfg.MinCertValidity, "fail when the serving certificate expires sooner than this")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound on each network call: dialling the webhook, reading a Supervisor's census")
	fs.DurationVar(&cfg.Wait, "wait", cfg.Wait, "ask the checks that can pass on their own (endpoints ready, caBundle injected, leader labelled) again until they pass or this is over; 0 asks once")
	fs.StringVar(&cfg.Output, "output", cfg.Output, "report format: text or json")
	fs.StringVar(&cfg.Output, "o", cfg.Output, "shorthand for --output")
	fs.BoolVar(&cfg.List, "list", false, "list the checks (ID, severity, retried by --wait, what must be true) instead of running them")
	return func(ctx context.Context, log *slog.Logger) error {
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		return r.check(ctx, cfg, r.stdout, r.stderr, log)
	}
}
