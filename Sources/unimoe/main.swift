import Foundation
import UnimoeCLI

exit(CLI.main(CommandLine.arguments, commands: allCommands))
