// Command hello is the tiny program the builder's tests put into an image.
package main

import "fmt"

func main() { fmt.Println("hello") }
