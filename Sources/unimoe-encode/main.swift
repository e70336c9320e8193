import Foundation
import Stages
import Tensor

BLASRuntime.selectFastKernels()

exit(RoleMain.main("encode", CommandLine.arguments))
