import Foundation
import UnimoeCLI
import Tensor

BLASRuntime.selectFastKernels()

exit(CLI.main(CommandLine.arguments, commands: allCommands))
