package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Promtool is the path of Prometheus's promtool, which checks and unit-tests the chart's
// alerting rules, or an error that says how to install it.
func Promtool() (string, error) {
	p, err := exec.LookPath("promtool")
	if err != nil {
		return "", fmt.Errorf("promtool not found: make promtool (apt-get install --no-install-recommends prometheus) installs it")
	}
	return p, nil
}

// RulesFile is the chart's alerting rules (a Prometheus rules file).
func RulesFile() string {
	return filepath.Join(RepoRoot(), "deploy", "helm", "habring", "files", "prometheus-rules.yaml")
}

// CheckRules runs `promtool check rules` on the rule groups (the spec of a
// PrometheusRule, or a rules file's content), written to a file in dir.
func CheckRules(dir string, groups any) error {
	promtool, err := Promtool()
	if err != nil {
		return err
	}
	b, err := yaml.Marshal(groups)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("promtool check rules: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
