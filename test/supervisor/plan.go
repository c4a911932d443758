package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/mailgun/raymond/v2"
)

// Hook names the double runs (components/sup/src/manager/service/hooks.rs). Others in a
// plan's hooks/ are rendered and written but never run: README says which.
const (
	HookInit        = "init"
	HookRun         = "run"
	HookReconfigure = "reconfigure"
	HookHealthCheck = "health-check"
	HookSuitability = "suitability"
	HookPostStop    = "post-stop"
)

// Plan is a service's package as the double runs it: the plan directory of a Habitat plan
// (plan.sh, default.toml, config/ and hooks/ templates). The real Supervisor runs a built
// package; the parts it reads are the same: default.toml, the config/ and hooks/
// templates, and the exports hab-plan-build writes from pkg_exports.
type Plan struct {
	Dir string
	// Defaults is default.toml.
	Defaults map[string]any
	// Exports is plan.sh's pkg_exports: exported key -> cfg key (dotted). What a member
	// exports is gossiped: others see it as svc.leader.cfg.<key> and in the census.
	Exports map[string]string
	// Config holds the templates under config/, by their path below it.
	Config map[string]*raymond.Template
	// Hooks holds the templates under hooks/, by hook name.
	Hooks map[string]*raymond.Template
}

// pkg_exports=( [port]=port [host]=net.host ) in plan.sh; hab-plan-build turns it into the
// package's EXPORTS file.
var (
	exportsBlock = regexp.MustCompile(`(?s)pkg_exports=\((.*?)\)`)
	exportsEntry = regexp.MustCompile(`\[([A-Za-z0-9_.-]+)\]=([A-Za-z0-9_.-]+)`)
)

// LoadPlan reads a plan directory. Every template is parsed here, so a template that does
// not compile fails the start with its file named, as the Supervisor refuses to load such
// a service.
func LoadPlan(dir string) (*Plan, error) {
	p := &Plan{Dir: dir, Defaults: map[string]any{}, Exports: map[string]string{},
		Config: map[string]*raymond.Template{}, Hooks: map[string]*raymond.Template{}}
	if _, err := toml.DecodeFile(filepath.Join(dir, "default.toml"), &p.Defaults); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("plan %s: default.toml: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "plan.sh")); err == nil {
		if m := exportsBlock.FindSubmatch(b); m != nil {
			for _, e := range exportsEntry.FindAllSubmatch(m[1], -1) {
				p.Exports[string(e[1])] = string(e[2])
			}
		}
	}
	for sub, into := range map[string]map[string]*raymond.Template{"config": p.Config, "hooks": p.Hooks} {
		root := filepath.Join(dir, sub)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			t, err := raymond.Parse(string(src))
			if err != nil {
				return fmt.Errorf("template %s/%s: %w", sub, rel, err)
			}
			registerHelpers(t)
			into[rel] = t
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("plan %s: %w", dir, err)
		}
	}
	if p.Hooks[HookRun] == nil {
		return nil, fmt.Errorf("plan %s: no hooks/run: the double runs a service by its run hook (hab-plan-build writes one from pkg_svc_run)", dir)
	}
	return p, nil
}

// HookNames lists the plan's hooks, sorted.
func (p *Plan) HookNames() []string { return slices.Sorted(maps.Keys(p.Hooks)) }

// UserConfig is what a user gives a service on top of default.toml, each layer TOML:
// the environment variable HAB_<SERVICE> and <user root>/<service>/config/user.toml.
type UserConfig struct {
	Env, File string
}

// EnvName is the environment variable that holds a service's config as TOML:
// HAB_ and the service name upper-cased, dashes as underscores (HAB_REDIS).
func EnvName(service string) string {
	return "HAB_" + strings.ToUpper(strings.ReplaceAll(service, "-", "_"))
}

// Cfg merges the layers of a service's config as the Supervisor does
// (components/sup/src/manager/service/config.rs, Cfg::to_toml): default.toml, then the
// environment, then user.toml, each table merged key by key, a later layer's value
// winning.
func (p *Plan) Cfg(u UserConfig) (map[string]any, error) {
	out := map[string]any{}
	merge(out, p.Defaults)
	for _, layer := range []struct{ name, src string }{{"environment", u.Env}, {"user.toml", u.File}} {
		if layer.src == "" {
			continue
		}
		var m map[string]any
		if _, err := toml.Decode(layer.src, &m); err != nil {
			return nil, fmt.Errorf("user config (%s): %w", layer.name, err)
		}
		merge(out, m)
	}
	return out, nil
}

func merge(into, from map[string]any) {
	for k, v := range from {
		if sub, ok := v.(map[string]any); ok {
			if cur, ok := into[k].(map[string]any); ok {
				merge(cur, sub)
				continue
			}
			cp := map[string]any{}
			merge(cp, sub)
			into[k] = cp
			continue
		}
		into[k] = v
	}
}

// Exported is the part of cfg the plan exports (pkg_exports), by exported key.
func (p *Plan) Exported(cfg map[string]any) map[string]any {
	out := map[string]any{}
	for key, path := range p.Exports {
		var v any = cfg
		for part := range strings.SplitSeq(path, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		if v != nil {
			out[key] = v
		}
	}
	return out
}

// registerHelpers adds the Handlebars helpers of Habitat's templating
// (components/common/src/templating/helpers) that the double supports.
func registerHelpers(t *raymond.Template) {
	t.RegisterHelpers(map[string]any{
		"toUppercase": func(s string) string { return strings.ToUpper(s) },
		"toLowercase": func(s string) string { return strings.ToLower(s) },
		"strReplace":  func(s, from, to string) string { return strings.ReplaceAll(s, from, to) },
		// eachAlive iterates the alive members of a list (svc.members, bind.X.members).
		"eachAlive": func(members []any, options *raymond.Options) string {
			var b strings.Builder
			for _, m := range members {
				if mm, ok := m.(map[string]any); ok && mm["alive"] == true {
					b.WriteString(options.FnWith(m))
				}
			}
			return b.String()
		},
	})
}
