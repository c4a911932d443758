package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"mvdan.cc/sh/v3/syntax"
	"sigs.k8s.io/yaml"

	"github.com/habring/habring/internal/check"
	"github.com/habring/habring/internal/render"
	"github.com/habring/habring/internal/webhook"
)

// The commands of README.md and docs/ run as written, and their links lead somewhere: each sh code block is parsed as
// the shell would, and every command in it is run where it can run here (habring's own
// commands that need no cluster: render offline, --help, check --list) and otherwise
// checked against what it names: habring's flags parse (its runners stubbed), make
// targets exist, Helm's --set keys are the chart's values, and every path of this
// repository a command names exists.
func TestDocCommands(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	valuesYAML, err := os.ReadFile(filepath.Join(root, "deploy", "helm", "habring", "values.yaml"))
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(valuesYAML, &values))
	t.Chdir(root) // the docs' paths are the repository's

	counts := map[string]int{}
	for _, file := range files {
		md, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range mdLink.FindAllStringSubmatch(string(md), -1) {
			_, err := os.Stat(filepath.Join(filepath.Dir(file), m[1]))
			require.NoError(t, err, "%s links to %s", filepath.Base(file), m[1])
			counts["link"]++
		}
		for i, block := range shellBlocks(string(md)) {
			where := filepath.Base(file) + " block " + string(rune('1'+i))
			// <release>, <CA PEM file>: what the reader fills in, one word to the shell.
			block = placeholder.ReplaceAllString(block, "PLACEHOLDER")
			f, err := syntax.NewParser().Parse(strings.NewReader(block), where)
			require.NoError(t, err, "%s does not parse as sh:\n%s", where, block)
			syntax.Walk(f, func(n syntax.Node) bool {
				call, ok := n.(*syntax.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				args := words(call.Args)
				what := where + ": " + strings.Join(args, " ")
				counts[checkCommand(t, what, args, makefile, values)]++
				return true
			})
		}
	}
	t.Logf("commands in README.md and docs/: %v", counts)
	require.Positive(t, counts["run"], "some command runs")
}

// shellBlocks are the bodies of the ```sh (or ```bash) fences of a Markdown file.
func shellBlocks(md string) []string {
	var out []string
	var b strings.Builder
	in := false
	for l := range strings.SplitSeq(md, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case !in && (trimmed == "```sh" || trimmed == "```bash"):
			in = true
			b.Reset()
		case in && trimmed == "```":
			in = false
			out = append(out, b.String())
		case in:
			b.WriteString(l + "\n")
		}
	}
	return out
}

// words are a command's arguments as the shell passes them; an expansion the shell would
// fill in ($X, $(...)) reads as <expansion>.
func words(ws []*syntax.Word) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		var b strings.Builder
		for _, p := range w.Parts {
			switch p := p.(type) {
			case *syntax.Lit:
				b.WriteString(p.Value)
			case *syntax.SglQuoted:
				b.WriteString(p.Value)
			case *syntax.DblQuoted:
				for _, q := range p.Parts {
					if l, ok := q.(*syntax.Lit); ok {
						b.WriteString(l.Value)
					} else {
						b.WriteString("<expansion>")
					}
				}
			default:
				b.WriteString("<expansion>")
			}
		}
		out[i] = b.String()
	}
	return out
}

// mdLink is a Markdown link to a file of this repository (not a URL, not an anchor alone).
var mdLink = regexp.MustCompile(`\]\(([^)#:\s]+)(?:#[^)]*)?\)`)

// placeholder is what a reader fills in: <namespace>, <CA PEM file>.
var placeholder = regexp.MustCompile(`<[A-Za-z][\w .:/-]*>`)

// repoPath matches an argument naming a file or directory of this repository.
var repoPath = regexp.MustCompile(`^(\./)?(examples|deploy|docs|test|cmd|internal|contract|tools)(/[\w.-]*)*$`)

// checkCommand runs or checks one command, and says which it did.
func checkCommand(t *testing.T, what string, args []string, makefile []byte, values map[string]any) string {
	t.Helper()
	for _, a := range args {
		_, value, _ := strings.Cut(a, "=") // --flag=path
		for _, v := range []string{a, value} {
			if repoPath.MatchString(v) {
				_, err := os.Stat(strings.TrimSuffix(strings.TrimSuffix(v, "/..."), "..."))
				require.NoError(t, err, "%s: names %s", what, v)
			}
		}
	}
	switch {
	case args[0] == "make":
		for _, target := range args[1:] {
			if strings.Contains(target, "=") || strings.HasPrefix(target, "-") {
				continue
			}
			require.Regexp(t, `(?m)^`+regexp.QuoteMeta(target)+`:`, string(makefile), "%s: no make target %s", what, target)
		}
		return "make target checked"
	case args[0] == "habring" || args[0] == "./habring" || args[0] == "bin/habring":
		return runHabring(t, what, args[1:])
	case args[0] == "kubectl" && len(args) > 1 && args[1] == "habring":
		return runHabring(t, what, args[2:])
	case args[0] == "go" && len(args) > 2 && args[1] == "run" && args[2] == "./cmd/habring":
		return runHabring(t, what, args[3:])
	case args[0] == "helm" && len(args) > 1 && (args[1] == "upgrade" || args[1] == "install" || args[1] == "template"):
		for i, a := range args {
			if (a == "--set" || a == "--set-file" || a == "--set-string") && i+1 < len(args) {
				key, _, _ := strings.Cut(args[i+1], "=")
				require.True(t, hasKey(values, strings.Split(key, ".")), "%s: --set %s is not a value of deploy/helm/habring", what, key)
			}
		}
		return "helm values checked"
	}
	return "paths checked"
}

func hasKey(values map[string]any, path []string) bool {
	v, ok := values[strings.TrimSuffix(path[0], "[0]")]
	if !ok {
		return false
	}
	if len(path) == 1 {
		return true
	}
	m, ok := v.(map[string]any)
	return ok && hasKey(m, path[1:])
}

// runHabring runs habring's CLI with args: for real where no cluster is needed (render
// without --kubeconfig, --help, check --list), else with its runners stubbed, so that
// the flags must parse.
func runHabring(t *testing.T, what string, args []string) string {
	t.Helper()
	if slices.Contains(args, "<expansion>") {
		return "paths checked"
	}
	var out, errb bytes.Buffer
	real := len(args) == 0 || slices.Contains(args, "--help") || slices.Contains(args, "--list") ||
		(args[0] == "render" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kubeconfig") }))
	r := runners{
		webhook: func(context.Context, webhook.Config, *slog.Logger) error { return nil },
		render:  func(context.Context, render.Config, io.Reader, io.Writer, *slog.Logger) error { return nil },
		check:   func(context.Context, check.Config, io.Writer, io.Writer, *slog.Logger) error { return nil },
	}
	if real {
		r.render, r.check, r.stdin = render.Run, check.Run, strings.NewReader("")
	}
	r.stdout, r.stderr = &out, &errb
	code := cli(t.Context(), args, &out, &errb, r)
	require.Equal(t, 0, code, "%s: exit %d\n%s", what, code, errb.String())
	if real {
		require.NotEmpty(t, out.String(), what)
		return "run"
	}
	return "flags checked"
}
