// Command hello stands in for habring in tools/image's test: a small static binary.
package main

import "fmt"

func main() { fmt.Println("hello from the image") }
